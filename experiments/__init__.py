"""The papers' toy reproductions, importable and runnable from the shell.

* :mod:`lionx.experiments.toy_rate`: Appendix A.1.1 of Dong, Li, Lin's
  journal version, Lion's rate on a 2-D nonconvex function against
  Corollaries 3 and 5.
* :mod:`lionx.experiments.lion_k_2d`: Figures 1 and 5 of Chen, Liu, Liang,
  Liu (Lion-K trajectories and their constraint sets), the weight-decay
  sweep, and Phase 1 of Theorem 4.1.

Each module has ``run(...)`` returning the measurements and ``main()``
writing a PNG and tables to ``--out`` (never overwriting without
``--overwrite``).
"""
