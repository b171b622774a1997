from .autoencoder import Decoder, Encoder
from .integer_prior import IntegerPrior
from .prior import MIMPrior
from .quantizer import ProductQuantizer

__all__ = ["Encoder", "Decoder", "ProductQuantizer", "MIMPrior", "IntegerPrior"]
