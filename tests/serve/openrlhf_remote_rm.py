# ruff: noqa: E501
"""OpenRLHF's own remote reward-model client, used verbatim as a test fixture.

From OpenRLHF v0.9.0 (https://github.com/OpenRLHF/OpenRLHF, tag v0.9.0, commit
06ab51e75c0e8c5b4d6b66912996b2a611e3dc2f), file ``openrlhf/utils/remote_rm_utils.py``:
``request_api_wrapper`` is copied unchanged, and ``remote_rm_fn`` is the body of its
``remote_rm_fn_ray`` unchanged. Changes, all outside that code: the ``@ray.remote`` decorator is
dropped (the tests call the function directly, without a Ray cluster), the function is named
without its ``_ray`` suffix, and OpenRLHF's ``init_logger`` is replaced by the standard
library's logger.

Copyright the OpenRLHF authors. Licensed under the Apache License, Version 2.0 (the
"License"); you may not use this file except in compliance with the License. You may obtain a
copy of the License at http://www.apache.org/licenses/LICENSE-2.0. Unless required by applicable
law or agreed to in writing, software distributed under the License is distributed on an "AS IS"
BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License
for the specific language governing permissions and limitations under the License.
"""

# fmt: off
import logging
import time

import requests

logger = logging.getLogger(__name__)


def request_api_wrapper(url, data, try_max_times=5):
    """Synchronous request API wrapper"""
    headers = {
        "Content-Type": "application/json",
    }
    for _ in range(try_max_times):
        try:
            response = requests.post(url=url, json=data, headers=headers, timeout=180)
            response.raise_for_status()  # Raise an HTTPError for bad responses
            response = response.json()
            return response
        except requests.RequestException as e:
            logger.info(f"Request error, please check: {e}")
        except Exception as e:
            logger.info(f"Unexpected error, please check: {e}")
        time.sleep(1)

    raise Exception(f"Request error for {try_max_times} times, returning None. Please check the API server.")


def remote_rm_fn(api_url, queries, prompts, labels):
    return request_api_wrapper(api_url, {"query": queries, "prompts": prompts, "labels": labels})
