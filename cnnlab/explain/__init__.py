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

The same tools are on the command line as ``cnnlab explain conv|weight-sharing|matched-filter|features|
invariance|saliency`` and ``cnnlab report RUN_DIR``.
"""
from .conv import conv_steps, convolve, explain_conv
from .common import load_image, pick_conv_layer
from .matched_filter import cross_correlate, explain_matched_filter, normalized_cross_correlate, top_patches
from .weight_sharing import conv_to_dense, explain_weight_sharing
from .features import explain_features, feature_maps, layer_statistics
from .subject import read_filter_snapshots
from .invariance import invariance_experiment, shift_images
from .saliency import explain_saliency, gradient_saliency, grad_cam, occlusion_sensitivity
from .report import write_report

__all__ = ["explain_conv", "conv_steps", "convolve", "explain_weight_sharing", "conv_to_dense",
           "explain_matched_filter", "cross_correlate", "normalized_cross_correlate", "top_patches",
           "load_image", "pick_conv_layer", "explain_features", "feature_maps", "layer_statistics",
           "read_filter_snapshots", "invariance_experiment", "shift_images", "explain_saliency", "gradient_saliency",
           "grad_cam", "occlusion_sensitivity", "write_report"]
