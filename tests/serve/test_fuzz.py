"""Property-based fuzzing of every operation in the served OpenAPI: no input yields a 5xx.

Schemathesis turns each operation's schema into a Hypothesis strategy (valid and invalid
bodies, paths and headers); the only check is that the server never answers 5xx.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def test_no_server_errors_on_any_operation(server):
    before = requests_served(server)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @EXAMPLES
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=30)

        fuzz()
    # The cases really reached the server; operations without parameters yield few distinct
    # cases, so the bar is a handful per operation on average, not max_examples each.
    assert requests_served(server) - before >= 5 * len(operations)


def requests_served(server) -> float:
    return sum(
        float(line.split()[-1])
        for line in server.get("/metrics").text.splitlines()
        if line.startswith("reward_requests_total{")
    )
