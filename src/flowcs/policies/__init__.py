"""Sampling policies behind one interface: ``propose(condition, budget, acquired, generator, observe) -> mask``.

Peers of the flow policy (``flowcs compare``): LOUPE and DPS (learned, non-adaptive), A-DPS (learned,
sequential and adaptive) and ADS (sequential, posterior disagreement under a flow-matching image prior).
Sequential policies measure between their acquisitions through ``observe`` (see :mod:`.base`).
"""

from .adps import ADPSNet, ADPSPolicy
from .ads import ADSPolicy, FlowPriorObjective, ImagePriorNet
from .base import Observe, Policy, ScorePolicy
from .dps import DPSPolicy, gumbel_topk
from .loupe import LOUPEPolicy, conditional_bernoulli, rescale_probabilities
from .random import RandomPolicy
from .training import PeerObjective, observer

__all__ = ["Policy", "ScorePolicy", "Observe", "RandomPolicy", "LOUPEPolicy", "DPSPolicy", "ADPSPolicy", "ADPSNet",
           "ADSPolicy", "ImagePriorNet", "FlowPriorObjective", "PeerObjective", "observer", "gumbel_topk",
           "rescale_probabilities", "conditional_bernoulli"]
