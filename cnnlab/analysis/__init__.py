"""The numbers about a model and an input, for the pictures of ``cnnlab.explain`` and the JSON of ``cnnlab.serve``.

* :mod:`.layers` -- layer kinds, the first convolution, every layer's output and input, receptive fields;
* :mod:`.convolution` -- one filter over one image, every step of it, and a convolution's dense equivalent;
* :mod:`.units` -- one output unit of any layer down to its terms (window, weights, products, sum);
* :mod:`.patches` -- template matching: cross-correlation and the input patches a filter responds to most;
* :mod:`.attribution` -- which pixels a prediction depends on: gradient saliency, SmoothGrad, occlusion, Grad-CAM;
* :mod:`.shifts` -- shifted inputs and how much features and prediction change;
* :mod:`.novelty` -- how far an input is from a model's training data (the explorer's warning), calibrated on held-out images;
* :mod:`.texts` -- the sentences that explain a model to a learner, chosen by rules from the numbers above.

Only NumPy and cnnlab's layers: importing this package loads neither matplotlib nor a web framework.
"""
from .layers import (capture, capture_batches, conv_layer, feature_maps, first_conv, kind, layer_input,
                     layer_inputs, one_image, receptive_field, receptive_field_centres, sources, statistics)
from .convolution import (check_dense_equivalent, conv_steps, conv_to_dense, convolve, dense_equivalent,
                          expected_nonzeros, local_to_dense, parse_padding)
from .patches import cross_correlate, normalized_cross_correlate, top_patches
from .attribution import (default_cam_layer, grad_cam, gradient_saliency, occlusion_sensitivity, score_gradient,
                          smoothgrad, upsample_bilinear)
from .shifts import place_on_canvas, relative_change, shift_images, shift_response
from .units import unit
from . import texts

__all__ = ["capture", "capture_batches", "conv_layer", "feature_maps", "first_conv", "kind", "layer_input",
           "layer_inputs", "one_image", "receptive_field", "receptive_field_centres", "sources", "statistics",
           "check_dense_equivalent", "conv_steps", "conv_to_dense", "convolve", "dense_equivalent",
           "expected_nonzeros", "local_to_dense", "parse_padding", "cross_correlate",
           "normalized_cross_correlate", "top_patches", "default_cam_layer", "grad_cam", "gradient_saliency",
           "occlusion_sensitivity", "score_gradient", "smoothgrad", "upsample_bilinear", "place_on_canvas",
           "relative_change", "shift_images", "shift_response", "unit", "texts"]
