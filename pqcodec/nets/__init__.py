from .autoencoder import Decoder, Encoder
from .conditional import ConditionalHead
from .prior import MIMPrior
from .quantizer import ProductQuantizer

__all__ = ["Encoder", "Decoder", "ProductQuantizer", "MIMPrior", "ConditionalHead"]
