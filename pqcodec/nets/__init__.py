from .autoencoder import Decoder, Encoder
from .conditional import ConditionalHead
from .integer_conditional import IntConditionalHead
from .integer_prior import IntegerPrior
from .prior import MIMPrior
from .quantizer import ProductQuantizer

__all__ = ["Encoder", "Decoder", "ProductQuantizer", "MIMPrior", "IntegerPrior", "ConditionalHead", "IntConditionalHead"]
