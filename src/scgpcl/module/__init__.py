"""Pure torch maths: the network, the losses and the objective. Never sees AnnData."""

from ._losses import dec_kl, info_nce, nb_log_prob, proto_nce, soft_assign, target_distribution, zinb_log_prob, zinb_nll
from ._network import ACTIVATIONS, ENCODERS, BipartiteSAGELayer, GraphEncoder, MLPEncoder, SCGPCLModule, ZINBDecoder
from ._objective import (
    LOSS_TERMS,
    RECONSTRUCTIONS,
    Forward,
    LossContext,
    LossOutput,
    LossTerm,
    Prototypes,
    Reconstruction,
    batch_loss,
    register_loss_term,
)

__all__ = [
    "ACTIVATIONS", "ENCODERS", "LOSS_TERMS", "RECONSTRUCTIONS",
    "BipartiteSAGELayer", "Forward", "GraphEncoder", "LossContext", "LossOutput", "LossTerm", "MLPEncoder",
    "Prototypes", "Reconstruction", "SCGPCLModule", "ZINBDecoder",
    "batch_loss", "dec_kl", "info_nce", "nb_log_prob", "proto_nce", "register_loss_term", "soft_assign",
    "target_distribution", "zinb_log_prob", "zinb_nll",
]
