"""Tools that show *why* convolutional networks work, each writing pictures, a self-contained HTML page and JSON.

* :func:`explain_conv` -- the convolution step, animated (``conv.gif``, ``conv.html``, ``conv.json``);
* :func:`explain_weight_sharing` -- a convolution is a sparse fully connected layer with tied weights;
  conv vs locally connected vs dense (``weight_sharing.html``, ``weight_sharing.json``);
* :func:`explain_matched_filter` -- convolution as template matching; what a trained filter responds to
  (``matched_filter.html``, ``matched_filter.json``).

The same tools are on the command line as ``cnnlab explain conv|weight-sharing|matched-filter``.
"""
from .conv import conv_steps, convolve, explain_conv
from .common import load_image, pick_conv_layer
from .matched_filter import cross_correlate, explain_matched_filter, normalized_cross_correlate, top_patches
from .weight_sharing import conv_to_dense, explain_weight_sharing

__all__ = ["explain_conv", "conv_steps", "convolve", "explain_weight_sharing", "conv_to_dense",
           "explain_matched_filter", "cross_correlate", "normalized_cross_correlate", "top_patches",
           "load_image", "pick_conv_layer"]
