"""`thermolog demo`: orchestration of every part (run.py) and the embedded broker it starts when none is set."""
