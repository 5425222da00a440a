"""What F measures at END: the metric, a methodology choice (README, "Metrics").

- logit_diff: logit[correct] - logit[incorrect] (Wang et al.; the default);
- kl: KL(P_model || P_S), the clean model's next-token distribution against the one with the nodes
  outside S ablated, in nats (ACDC, MIB's circuit track); 0 for the intact model, larger is worse;
- prob_diff: softmax prob[correct] - prob[incorrect].
The evaluator reads logit_diff from two logits; the other two need every logit at END.
"""
from __future__ import annotations

from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F


class Metric(str, Enum):
    LOGIT_DIFF = "logit_diff"
    KL = "kl"
    PROB_DIFF = "prob_diff"

    @property
    def label(self) -> str:
        """Axis and column text: what F is, with its unit."""
        return {"logit_diff": "logit difference", "kl": "KL (nats)", "prob_diff": "probability difference"}[self.value]

    @property
    def help(self) -> str:
        return {"logit_diff": "logit[correct] − logit[incorrect] at END (Wang et al.)",
                "kl": "KL(P_model ‖ P_S) of the next token at END, in nats (ACDC, MIB): 0 for the model",
                "prob_diff": "prob[correct] − prob[incorrect] at END, after the softmax"}[self.value]

    @property
    def short(self) -> str:
        """Chart titles: "Per-prompt <short>"; axis: "mean <abbr> (<unit>)"."""
        return {"logit_diff": "logit difference", "kl": "KL divergence", "prob_diff": "probability difference"}[self.value]

    @property
    def abbr(self) -> str:
        return {"logit_diff": "logit diff", "kl": "KL", "prob_diff": "prob diff"}[self.value]

    @property
    def unit(self) -> str:
        return "probability" if self is Metric.PROB_DIFF else "nats"

    def what(self, task_metric: str) -> str:
        """What F averages, in words: the task's own words for its logit difference, else the metric's."""
        if self is Metric.LOGIT_DIFF:
            return task_metric
        return "KL(P_model ‖ P_S) at END" if self is Metric.KL else "prob[correct] − prob[incorrect] at END"

    @property
    def full_vocab(self) -> bool:
        """Whether the metric reads every logit (not just the two answers')."""
        return self is not Metric.LOGIT_DIFF

    @property
    def scale_name(self) -> str:
        """What thresholds in % are a share of: |F(M)|, or under KL (F(M) = 0) F(∅) − F(M)."""
        return "F(∅) − F(M)" if self is Metric.KL else "|F(M)|"


def metric_label(metric: str | None) -> str:
    return Metric(metric or Metric.LOGIT_DIFF.value).label


def scale_values(metric: str | None, model: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
    """Per-prompt values whose mean's magnitude is the scale thresholds in % refer to: f_M, or under KL
    f_∅ − f_M (the whole range from the model to the empty circuit)."""
    if Metric(metric or "logit_diff") is Metric.KL:
        return np.asarray(empty) - np.asarray(model)
    return np.asarray(model)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the vocabulary, in float32 at least (bfloat16 logits lose the tail)."""
    return F.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)


def from_logits(logits: torch.Tensor, answers: torch.Tensor, metric: str | Metric,
                clean_log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """The metric per row of logits at END [R, vocab]. R may be k·P (k patches of P prompts stacked in
    blocks): answers [P, 2] and clean_log_probs [P, vocab] then apply to each block. Differentiable."""
    metric = Metric(metric)
    reps = len(logits) // max(1, len(answers))
    if metric is Metric.LOGIT_DIFF:
        ans = answers.repeat(reps, 1)
        return logits.gather(1, ans[:, :1])[:, 0] - logits.gather(1, ans[:, 1:])[:, 0]
    lp = log_probs(logits)
    if metric is Metric.PROB_DIFF:
        ans = answers.repeat(reps, 1)
        return lp.gather(1, ans[:, :1])[:, 0].exp() - lp.gather(1, ans[:, 1:])[:, 0].exp()
    if clean_log_probs is None:
        raise ValueError("KL needs the clean model's log-probabilities")
    lp = lp.view(reps, -1, lp.shape[-1])
    clean = clean_log_probs.to(lp.device, lp.dtype)[None]
    return (clean.exp() * (clean - lp)).sum(-1).reshape(-1)
