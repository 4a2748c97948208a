"""The alert rules as the pages use them; they live in :mod:`thermolog.alerting.rules`, shared with
``thermolog automation``."""

from thermolog.alerting.rules import (
    COVERAGE,
    RULE_HEATING_NO_RISE,
    RULE_OFFLINE,
    RULE_SILENT,
    RULE_TEMP_HIGH,
    RULE_TEMP_LOW,
    Alert,
    current_alerts,
    evaluate,
)

__all__ = ["COVERAGE", "RULE_HEATING_NO_RISE", "RULE_OFFLINE", "RULE_SILENT", "RULE_TEMP_HIGH", "RULE_TEMP_LOW",
           "Alert", "current_alerts", "evaluate"]
