"""The gateway's core: everything but the HTTP binding. Nothing here imports azure.functions."""
