"""cnnlab: convolutional neural networks from first principles, on NumPy."""
__version__ = "0.1.0"
