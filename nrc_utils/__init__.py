"""nrc_utils: the science behind the Neural Rank Collapse companion book.

Companion code for Zangrando, Deidda, Brugiapaglia, Guglielmi, Tudisco,
"Neural Rank Collapse: Weight Decay and Small Within-Class Variability Yield
Low-Rank Bias", arXiv:2402.03991 (2024).

Modules, each named for what it holds (import them directly, e.g.
``from nrc_utils import spectral``):

The science
- ``data``           K-class Gaussian mixtures, scikit-learn digits, MNIST, Fashion-MNIST and
                     CIFAR-10 from their standard on-disk formats; ``standardize``.
- ``models``         MLPs, deep linear networks, a small CNN; ``weight_matrices``.
- ``losses``         the square loss and cross-entropy, per sample; accuracy.
- ``train``          gradient descent / SGD with weight decay ``lambda/2 ||W||_F^2``, L-BFGS
                     polishing in float64 to a stationarity target, checkpoints.
- ``ensemble``       many members (lambda grid x seeds) trained as one batched model.
- ``gradients``      per-sample signals delta_{l,i}, gradient ranks, the cluster split and the
                     neural-rank-collapse certificate (chapters 2 and 3).
- ``spectral``       singular values and rank measures, tail distance to rank K.
- ``collapse``       class means, within-class statistics, NC1, CDNV, TCV (streaming).
- ``mixture_bounds`` Gaussian-mixture TCV expectations and layer-wise bounds (chapter 4).
- ``deep_linear``    the forecast of deep linear networks' stationary points (chapter 5).
- ``truncation``     removing small singular values of every layer (chapter 6).

The book
- ``experiments``    one module per chapter: the experiments the chapter calls, returning tables,
                     and the rules of its parameters.
- ``figures``        one module per chapter: its figures, drawn in the book's style.
- ``prose``          one module per chapter: the sentences it glues, every branch tested.
- ``style``          the figure style: theme, palettes, markers, log ticks.
- ``report``         numbers rounded in the safe direction, glue, tables, stop summaries.
- ``params``         one-line rules for chapter parameters.
- ``records``        a build's run records, as the Reproducibility page shows them.
- ``cache``          results keyed by a hash of their configuration and of the code.
- ``device``         device choice, thread caps, seeding and progress bars.

Notation follows the book: ``f(x) = W_L s(W_{L-1} ... s(W_1 x))``, ``h_0 = x``,
``z_l = W_l h_{l-1}``, ``h_l = s(z_l)``, ``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2``,
``delta_{l,i} = d loss_i / d z_l``.
"""

__version__ = "0.1.0"
