"""Scale proof on a SIMULATED cluster (python -m benchmarks.scale; docs/scale.md).

cluster.py: multi-node Ray on this machine with cluster.yaml's node types; latency.py: the latency
model (published GPU figures) and the ideal-throughput formula; standins.py: the real role servers
with latency-model stand-ins (stand-in outputs: treat them as random-weight roles); roles.py: the
roles placed with configs/gpu_cluster.yaml's resources as named, shareable actors; driver.py: one
batch job's driver process (the real run_batch), instrumented; analysis.py: the figures.
"""
