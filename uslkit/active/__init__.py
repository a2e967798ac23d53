"""Multi-round active learning on frozen embeddings (papers 001 and 003): the loop, the head it trains each
round and the query strategies.

    from uslkit.active import run_active, paper_schedule
    res = run_active(emb, labels, strategy="badge", schedule=paper_schedule(200), start="usl",
                     test_emb=test_emb, test_labels=test_labels, out_dir="runs/al_badge")
    [(r["labeled"], r["test_acc"]) for r in res.rounds]
"""

from .finetuned import FinetuneClassifier, FinetunedModel
from .head import Head, HeadConfig, train_head
from .loop import ActiveResult, paper_schedule, run_active
from .strategies import STRATEGIES, QueryContext, query, strategy_options
from .study import effective_budget_ratio, gain_over, run_study

__all__ = ["ActiveResult", "FinetuneClassifier", "FinetunedModel", "Head", "HeadConfig", "QueryContext", "STRATEGIES",
           "effective_budget_ratio", "gain_over", "paper_schedule", "query", "run_active", "run_study",
           "strategy_options", "train_head"]
