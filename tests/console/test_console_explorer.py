"""Explorer links: with a chain's `explorer_tx_url` template, the console's detail page links each
attempt's transaction hash to the explorer; without one (the default) there is no link; a template
that is no http(s) URL or lacks {hash} is refused when settings load."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from core.settings import EvmChainSettings
from tests.conftest import ALICE, create_wallet, fund, random_address, wait_for_status, withdraw

TEMPLATE = "https://explorer.example/tx/{hash}?network=anvil"


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    chains = dict(base_settings.chains)
    chains["anvil"] = chains["anvil"].model_copy(update={"explorer_tx_url": TEMPLATE})
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": chains})


async def _signed_in(api, api_key: str) -> None:  # type: ignore[no-untyped-def]
    form = await api.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    signed = await api.post("/console/sign-in", data={"api_key": api_key, "csrf": token.group(1)})
    assert signed.status_code == 303, signed.text


async def test_the_detail_page_links_attempts_to_the_configured_explorer(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.01")).json()
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "COMPLETED" and done["attempts"], done
    await _signed_in(api, ALICE["Authorization"].removeprefix("Bearer "))
    page = await api.get(f"/console/withdrawals/{accepted['id']}")
    assert page.status_code == 200, page.text
    links = re.findall(r'<a class="explorer" href="([^"]+)"', page.text)
    assert links == [TEMPLATE.replace("{hash}", a["tx_hash"]).replace("&", "&amp;") for a in done["attempts"]]


def test_no_template_no_link_and_a_bad_template_is_refused():
    plain = EvmChainSettings(chain_id=1, rpc_url="http://127.0.0.1:8545")
    assert plain.explorer_tx_url == "" and plain.explorer_tx_link("0xabc") is None
    linked = plain.model_copy(update={"explorer_tx_url": "https://polygonscan.com/tx/{hash}"})
    assert linked.explorer_tx_link("0xabc") == "https://polygonscan.com/tx/0xabc"
    for bad in ("https://polygonscan.com/tx/", "javascript:alert(1)//{hash}", "polygonscan.com/tx/{hash}"):
        with pytest.raises(ValidationError):
            EvmChainSettings(chain_id=1, rpc_url="http://127.0.0.1:8545", explorer_tx_url=bad)
