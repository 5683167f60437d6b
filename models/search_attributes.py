"""Custom search attributes shown and filterable in the Temporal Web UI.

They are not encrypted by the payload codec, so they never hold addresses or amounts.
`./dev up` and the test servers register them; production namespaces need
`temporal operator search-attribute create` once (see README).
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

CHAIN = SearchAttributeKey.for_keyword("CustodyChain")
STATUS = SearchAttributeKey.for_keyword("CustodyStatus")
ASSET = SearchAttributeKey.for_keyword("CustodyAsset")
OWNER = SearchAttributeKey.for_keyword("CustodyOwner")
PAUSED = SearchAttributeKey.for_bool("CustodyPaused")

ALL = (CHAIN, STATUS, ASSET, OWNER, PAUSED)
KINDS = {CHAIN: "Keyword", STATUS: "Keyword", ASSET: "Keyword", OWNER: "Keyword", PAUSED: "Bool"}
