"""Evaluation metrics: ranks and accuracies in torch, captions with the COCO caption toolkit
(``pycocoevalcap``), GLUE with scikit-learn and SciPy.

All rank-based metrics count ties **against** the query/target: rank = 1 + #(others scoring
``>=`` the true item). Recall@K and top-k accuracies are percentages.
"""

from videolang.metrics.anticipation import (
    anticipation_metrics,
    many_shot_actions,
    mean_class_recall,
    verb_noun_accuracy,
)
from videolang.metrics.captioning import caption_metrics, cider, corpus_bleu, rouge_l
from videolang.metrics.classification import class_mean_recall, target_ranks, topk_accuracy
from videolang.metrics.knn import knn_predict
from videolang.metrics.retrieval import (
    MultiRanks,
    rank_metrics,
    retrieval_metrics,
    retrieval_metrics_multi,
    retrieval_ranks,
    retrieval_ranks_multi,
)

__all__ = [
    "MultiRanks",
    "anticipation_metrics",
    "caption_metrics",
    "cider",
    "class_mean_recall",
    "corpus_bleu",
    "knn_predict",
    "many_shot_actions",
    "mean_class_recall",
    "rank_metrics",
    "retrieval_metrics",
    "retrieval_metrics_multi",
    "retrieval_ranks",
    "retrieval_ranks_multi",
    "rouge_l",
    "target_ranks",
    "topk_accuracy",
    "verb_noun_accuracy",
]
