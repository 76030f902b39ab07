"""The Ray Serve endpoint: a FastAPI ingress and web page (`app.py`), the generator and predictor deployments
(`deployments.py`) over plain classes (`adapters.py`), request models (`schemas.py`) and the adapter store."""
