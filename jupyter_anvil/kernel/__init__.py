"""Code that runs inside app kernels, next to the author's server cells.

It never imports tornado or ``jupyter_anvil.host``: kernels may live on another machine.
"""
