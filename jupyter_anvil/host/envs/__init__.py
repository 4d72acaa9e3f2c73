"""Python environments per app: the packages an app's server code needs, installed apart from the server's own.

request.py     EnvRequest: what an app asks for (requirements, python), checked before anything runs
cache.py       EnvCache: the environments on disk (<data>/envs/<id>/), their ready markers, last use, sizes
builder.py     build_env: a venv layered over the server's packages, filled by uv or pip (no shell), smoke-checked
kernelspecs.py EnvKernelSpecs: the kernel spec "anvil-env-<id>" that starts an ipykernel in an environment
service.py     EnvService: one build per request at a time, in the background; the list, logs, pruning
"""
