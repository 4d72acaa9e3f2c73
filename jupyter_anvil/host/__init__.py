"""Code that runs in the Jupyter server process: one module per concept."""
