"""VLM recipes, one module per objective: ``vlm.pretrain`` and ``vlm.retrieval``
(:mod:`.pretrain`), ``vlm.mcqa`` (:mod:`.mcqa`), ``vlm.captioning`` (:mod:`.captioning`) and
``vlm.segmentation`` (:mod:`.segmentation`); :mod:`.model` builds and exports the model they
share. Their data: :mod:`videolang.data.vlm`; objectives and evaluation: docs/vlm.md.
"""

from __future__ import annotations

from videolang.data.videoclip import VideoCLIPSplits
from videolang.data.vlm import (
    VLMCaptionDataConfig,
    VLMCaptionSplits,
    VLMDataConfig,
    VLMPretrainDataConfig,
    VLMQADataConfig,
    VLMQASplits,
    VLMSegmentationDataConfig,
    VLMSegmentationSplits,
)
from videolang.engine import register_recipe
from videolang.recipes.vlm.captioning import VLMCaptioning, VLMCaptionModelConfig
from videolang.recipes.vlm.mcqa import (
    VLMMultipleChoice,
    VLMMultipleChoiceModelConfig,
)
from videolang.recipes.vlm.pretrain import (
    VLMPretrain,
    VLMPretrainModelConfig,
    VLMRetrieval,
    VLMRetrievalModelConfig,
)
from videolang.recipes.vlm.segmentation import VLMSegmentation, VLMSegmentationModelConfig

register_recipe("vlm.pretrain", VLMPretrain, VideoCLIPSplits, VLMPretrainModelConfig, VLMPretrainDataConfig)
register_recipe("vlm.retrieval", VLMRetrieval, VideoCLIPSplits, VLMRetrievalModelConfig, VLMDataConfig)
register_recipe("vlm.mcqa", VLMMultipleChoice, VLMQASplits, VLMMultipleChoiceModelConfig,
                VLMQADataConfig)
register_recipe("vlm.captioning", VLMCaptioning, VLMCaptionSplits, VLMCaptionModelConfig, VLMCaptionDataConfig)
register_recipe("vlm.segmentation", VLMSegmentation, VLMSegmentationSplits, VLMSegmentationModelConfig,
                VLMSegmentationDataConfig)
