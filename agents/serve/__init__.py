"""The interactive page: reverse one image and watch it converge, edit and regenerate, browse batches.

``python -m agents.serve --config FILE`` (agents/serve/__main__.py) starts the model roles on Ray
the way the batch job does, then serves a FastAPI app on 127.0.0.1 (another host only when asked):

- ``options``  — ``ServeOptions``, the server's validated settings (host, port, data folder, limits);
- ``uploads``  — the batch job's image checks applied to an uploaded file;
- ``store``    — one folder and one ``run.json`` per upload under ``<data>/runs/``;
- ``events``   — per-run and server-wide channels of server-sent events;
- ``runs``     — ``RunManager``: one LangGraph thread per upload on one shared checkpointer, started,
  stopped, resumed after a restart, edited and zipped;
- ``batches``  — read-only access to the output folders of batch jobs (their results browser);
- ``app``      — the HTTP routes; the page itself is agents/templates/serve_page.html + serve.js.
"""
