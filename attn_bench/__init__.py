"""attn-bench: does this attention block really help this backbone on this dataset, and at what cost?"""
from attn_bench.models import build_model

__version__ = "0.1.0"
__all__ = ["build_model", "__version__"]
