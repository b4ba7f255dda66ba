"""Pure torch maths: the network and the losses. Never sees AnnData."""

from ._losses import dec_kl, info_nce, nb_log_prob, proto_nce, soft_assign, target_distribution, zinb_log_prob, zinb_nll
from ._network import BipartiteSAGELayer, GraphEncoder, MLPEncoder, SCGPCLModule, ZINBDecoder

__all__ = [
    "BipartiteSAGELayer", "GraphEncoder", "MLPEncoder", "SCGPCLModule", "ZINBDecoder",
    "dec_kl", "info_nce", "nb_log_prob", "proto_nce", "soft_assign", "target_distribution", "zinb_log_prob", "zinb_nll",
]
