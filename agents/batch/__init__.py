"""The ARPO batch job as a library: plan the work, run it on the roles, write the results.

``agents.batch_reverse`` is the command-line shell over :func:`agents.batch.runner.run_batch`.
Modules: ``errors`` (exit statuses, setup errors), ``plan`` (images → work items, folder
checks), ``identity`` (the job's identity and settings fingerprint: what resume keys on),
``records`` (result records), ``writer`` (per-image folders, the log, summaries),
``captions`` (each finished image's best prompt as a training caption), ``console`` (the
quiet console and ``OUT/logs/``), ``startup`` (Ray, roles, resource and start-up checks),
``runner`` (the run itself).
"""
