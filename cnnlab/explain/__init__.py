"""Tools that show *why* convolutional networks work, each writing pictures, a self-contained HTML page and JSON.

* :func:`explain_conv` -- the convolution step, animated (``conv.gif``, ``conv.html``, ``conv.json``);
* :func:`explain_weight_sharing` -- a convolution is a sparse fully connected layer with tied weights;
  conv vs locally connected vs dense (``weight_sharing.html``, ``weight_sharing.json``);
* :func:`explain_matched_filter` -- convolution as template matching; what a trained filter responds to
  (``matched_filter.html``, ``matched_filter.json``);
* :func:`explain_features` -- every layer's feature maps, the learned filters and their evolution in training;
* :func:`invariance_experiment` -- accuracy against shift and rotation for a CNN and an MLP, equivariance of
  feature maps, invariance of pooled features, and the train-here-test-there canvas experiment;
* :func:`explain_saliency` -- gradient saliency, occlusion sensitivity and Grad-CAM for a class;
* :func:`write_report` -- one HTML page for a training run.

The numbers behind the pictures (convolution steps, feature maps, top patches, saliency, shifts,
and the sentences about them) come from :mod:`cnnlab.analysis`, which ``cnnlab serve`` shares.
The same tools are on the command line as ``cnnlab explain conv|weight-sharing|matched-filter|features|
invariance|saliency`` and ``cnnlab report RUN_DIR``.
"""
from .conv import explain_conv
from .common import load_image
from .matched_filter import explain_matched_filter
from .weight_sharing import explain_weight_sharing
from .features import explain_features
from .subject import read_filter_snapshots
from .invariance import invariance_experiment
from .saliency import explain_saliency
from .report import write_report

__all__ = ["explain_conv", "explain_weight_sharing", "explain_matched_filter", "load_image", "explain_features",
           "read_filter_snapshots", "invariance_experiment", "explain_saliency", "write_report"]
