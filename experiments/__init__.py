"""The papers' reproductions: a package of the repository, not of the wheel.

Run them from the root of a clone, ``python -m experiments.NAME --out DIR``
(``--help`` lists each one's options); each writes a PNG and tables to
``--out``, never overwriting without ``--overwrite``. They use lionx's
public API and the harness's (:mod:`lionx.train`) only, and load the
repository's config files (``configs/default.py``, ``configs/lm_default.py``).

Toy problems (no network):

* :mod:`experiments.toy_rate`: Appendix A.1.1 of Dong, Li, Lin's journal
  version, Lion's rate on a 2-D nonconvex function against Corollaries 3
  and 5.
* :mod:`experiments.lion_k_2d`: Figures 1 and 5 of Chen, Liu, Liang, Liu
  (Lion-K trajectories and their constraint sets), the weight-decay sweep,
  and Phase 1 of Theorem 4.1.

Networks, each run one :func:`lionx.train.train_and_evaluate` (with a
:class:`lionx.train.Hook` where a run records more than its evaluations):

* :mod:`experiments.weight_confinement`: Chen, Liu, Liang, Liu Figures 2, 3.
* :mod:`experiments.weight_decay_sweep`: their Figure 4.
* :mod:`experiments.lion_lp_networks`: their Figures 6, 7 (vision panels).
* :mod:`experiments.lm_lion_lp`: Figures 6, 7, language panel.
* :mod:`experiments.lm_sqrt_d`: Dong, Li, Lin Figures 2 (BERT) and 3 (GPT-2).
* :mod:`experiments.lm_perplexity`: their Table B.1.
* :mod:`experiments.lion_k_frontier`: Lion-K members since the papers
  (spectral Lion, cautious weight decay) against Muon and AdamW.

Each module has ``run(...)`` returning the measurements and ``main()``,
the command line.
"""
