"""nrc_utils: the science behind the Neural Rank Collapse companion book.

Companion code for Zangrando, Deidda, Brugiapaglia, Guglielmi, Tudisco,
"Neural Rank Collapse: Weight Decay and Small Within-Class Variability Yield
Low-Rank Bias", arXiv:2402.03991 (2024).

Modules, each named for what it holds (import them directly, e.g.
``from nrc_utils import spectral``):

- ``data``      K-class Gaussian mixtures, scikit-learn digits, MNIST,
                Fashion-MNIST and CIFAR-10 from their standard on-disk formats.
- ``models``    MLPs, deep linear networks, a small CNN; ``weight_matrices``.
- ``train``     gradient descent / SGD with weight decay ``lambda/2 ||W||_F^2``,
                L-BFGS polishing in float64 to a stationarity target.
- ``ensemble``  many members (lambda grid x seeds) trained as one batched model.
- ``spectral``  singular values and rank measures, tail distance to rank K.
- ``collapse``  class means, within-class statistics, NC1, CDNV, TCV (streaming).
- ``gradients`` per-sample signals delta_{l,i}, gradient ranks, the cluster
                split and the neural-rank-collapse certificate.
- ``cache``     results keyed by a hash of their configuration.
- ``device``    device choice, thread caps and seeding.

Notation follows the book (``shared/SPEC.md``): ``f(x) = W_L s(W_{L-1} ... s(W_1 x))``,
``h_0 = x``, ``z_l = W_l h_{l-1}``, ``h_l = s(z_l)``,
``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2``, ``delta_{l,i} = d loss_i / d z_l``.
"""

__version__ = "0.1.0"
