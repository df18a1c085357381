"""Shared test settings."""

import hypothesis

hypothesis.settings.register_profile(
    'lionx', deadline=None, max_examples=40, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile('lionx')
