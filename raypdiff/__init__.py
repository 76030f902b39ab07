"""raypdiff: COND P-DIFF on Ray: collect a LoRA checkpoint zoo, learn to generate adapters from task conditions."""
__version__ = "0.1.0"
