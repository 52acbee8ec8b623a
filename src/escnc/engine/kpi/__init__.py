"""KPIs: metric collectors (collectors.py), their definitions (spec.py), the ESC
evaluation rules (evaluate.py) and the poller that samples every monitored VM
(runtime.py)."""
