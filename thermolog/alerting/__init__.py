"""Alerts: the rules (``rules``), their start/clear episodes with cool-down and silences (``tracker``), delivery
through Apprise (``notify``), the audit events on MQTT (``events``), their history (``history``) and the
``thermolog automation`` process that ties them together (``service``)."""
