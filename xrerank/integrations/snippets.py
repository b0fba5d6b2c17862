"""The code recipes of `xrerank connect`: one paste-ready program per consumer.

Each ranks the same query and three documents and prints one line per result, best first:
the score rounded to four places, a space, the document's text. The tests run each one, as
printed, with the consumer's real package, and compare that order with xrerank's client.

A program reads the key from $XRERANK_API_KEY (`connect --format env` prints that line); the
Cohere-v2 consumers and llama-index's XinferenceRerank talk to the compatibility route
(xrerank.xinference.gateway), since Xinference 4.1 answers only /v1/rerank with a Bearer key.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from xrerank.defaults import API_KEY_ENV

if TYPE_CHECKING:
    from xrerank.integrations.connection import Connection

QUERY = "What is AI?"
DOCUMENTS = ("AI is the study of intelligent machines.", "Apples are fruit.", "Paris is the capital of France.")
KEY = f'os.environ["{API_KEY_ENV}"]'
HAYSTACK_KEY = f'Secret.from_env_var("{API_KEY_ENV}")'


def _documents() -> str:
    return f"documents = {json.dumps(list(DOCUMENTS))}"


def python(c: Connection) -> str:
    return f"""import os
from xrerank.client import Reranker

reranker = Reranker("{c.app_base_url}", "{c.model_uid}", api_key={KEY})
{_documents()}
for result in reranker.rerank("{QUERY}", documents):
    print(round(result.score, 4), result.document)"""


def llama_index(c: Connection) -> str:
    return f"""# pip install 'xrerank[llama-index]'
import os
from llama_index.core.schema import NodeWithScore, TextNode
from xrerank.integrations.llama_index import XrerankRerank

rerank = XrerankRerank(endpoint="{c.app_base_url}", model_uid="{c.model_uid}", api_key={KEY}, top_n=3)
# in a query engine: index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])
{_documents()}
nodes = [NodeWithScore(node=TextNode(text=text)) for text in documents]
for node in rerank.postprocess_nodes(nodes, query_str="{QUERY}"):
    print(round(node.score, 4), node.node.get_content())"""


def langchain(c: Connection) -> str:
    return f"""# pip install 'xrerank[langchain]'
import os
from langchain_core.documents import Document
from xrerank.integrations.langchain import XrerankRerank

compressor = XrerankRerank(endpoint="{c.app_base_url}", model_uid="{c.model_uid}", api_key={KEY}, top_n=3)
# in a chain: ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
{_documents()}
for document in compressor.compress_documents([Document(page_content=t) for t in documents], "{QUERY}"):
    print(round(document.metadata["relevance_score"], 4), document.page_content)"""


def haystack(c: Connection) -> str:
    return f"""# pip install 'xrerank[haystack]'
from haystack import Document
from haystack.utils import Secret
from xrerank.integrations.haystack import XrerankRanker

ranker = XrerankRanker(endpoint="{c.app_base_url}", model_uid="{c.model_uid}", api_key={HAYSTACK_KEY}, top_k=3)
# in a pipeline: pipeline.add_component("ranker", ranker); pipeline.connect("retriever", "ranker")
{_documents()}
for document in ranker.run(query="{QUERY}", documents=[Document(content=t) for t in documents])["documents"]:
    print(round(document.score, 4), document.content)"""


def _cohere_sdk(client: str, base_url: str | None, note: str, c: Connection) -> str:
    return f"""# pip install cohere   ({note})
import os
import cohere

co = cohere.{client}(base_url="{base_url}", api_key={KEY})
{_documents()}
response = co.rerank(model="{c.model_uid}", query="{QUERY}", documents=documents, top_n=3)
for result in response.results:
    print(round(result.relevance_score, 4), documents[result.index])"""


def cohere(c: Connection) -> str:
    return _cohere_sdk("Client", c.app_base_url, "the v1 Client, on Xinference itself: base_url is the host, no /v1", c)


def cohere_v2(c: Connection) -> str:
    return _cohere_sdk("ClientV2", c.v2_url, "ClientV2 posts /v2/rerank: base_url is xrerank's Cohere-v2 route", c)


def langchain_cohere(c: Connection) -> str:
    return f"""# pip install langchain-cohere   (its ClientV2 posts /v2/rerank: base_url is xrerank's Cohere-v2 route)
import os
from langchain_cohere import CohereRerank
from langchain_core.documents import Document

compressor = CohereRerank(base_url="{c.v2_url}", cohere_api_key={KEY}, model="{c.model_uid}", top_n=3)
{_documents()}
for document in compressor.compress_documents([Document(page_content=t) for t in documents], "{QUERY}"):
    print(round(document.metadata["relevance_score"], 4), document.page_content)"""


def llama_index_cohere(c: Connection) -> str:
    return f"""# pip install llama-index-postprocessor-cohere-rerank   (posts /v2/rerank: xrerank's Cohere-v2 route)
import os
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank

rerank = CohereRerank(base_url="{c.v2_url}", api_key={KEY}, model="{c.model_uid}", top_n=3)
{_documents()}
nodes = [NodeWithScore(node=TextNode(text=text)) for text in documents]
for node in rerank.postprocess_nodes(nodes, query_str="{QUERY}"):
    print(round(node.score, 4), node.node.get_content())"""


def llama_index_xinference(c: Connection) -> str:
    parts = urlsplit(c.v2_url or "")
    if c.key is None:
        return f"""# pip install llama-index-postprocessor-xinference-rerank
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.xinference_rerank import XinferenceRerank

rerank = XinferenceRerank(base_url="{c.app_base_url}", model="{c.model_uid}", top_n=3)
{_documents()}
nodes = [NodeWithScore(node=TextNode(text=text)) for text in documents]
for node in rerank.postprocess_nodes(nodes, query_str="{QUERY}"):
    print(round(node.score, 4), node.node.get_content())"""
    return f"""# pip install llama-index-postprocessor-xinference-rerank
# It sends no Authorization header (api_key= is ignored), only a URL: the key rides in it as Basic
# auth, which xrerank's route turns into the Bearer key Xinference reads. Keep the URL out of logs.
import os
from urllib.parse import quote
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.xinference_rerank import XinferenceRerank

key = quote({KEY}, safe="")
base_url = f"{parts.scheme}://xrerank:{{key}}@{parts.netloc}{parts.path}"
rerank = XinferenceRerank(base_url=base_url, model="{c.model_uid}", top_n=3)
{_documents()}
nodes = [NodeWithScore(node=TextNode(text=text)) for text in documents]
for node in rerank.postprocess_nodes(nodes, query_str="{QUERY}"):
    print(round(node.score, 4), node.node.get_content())"""


def haystack_cohere(c: Connection) -> str:
    return f"""# pip install cohere-haystack   (posts /v2/rerank: api_base_url is xrerank's Cohere-v2 route)
from haystack import Document
from haystack.utils import Secret
from haystack_integrations.components.rankers.cohere import CohereRanker

ranker = CohereRanker(model="{c.model_uid}", api_key={HAYSTACK_KEY}, api_base_url="{c.v2_url}", top_k=3)
{_documents()}
for document in ranker.run(query="{QUERY}", documents=[Document(content=t) for t in documents])["documents"]:
    print(round(document.score, 4), document.content)"""


def litellm(c: Connection) -> str:
    return f"""# pip install litellm   (an api_base ending in /v1/rerank puts its cohere provider on the v1 route)
import os
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no price list fetched at import
import litellm

{_documents()}
response = litellm.rerank(model="cohere/{c.model_uid}", query="{QUERY}", documents=documents, top_n=3,
                          api_base="{c.app_base_url}/v1/rerank", api_key={KEY})
for result in response.results:
    print(round(result["relevance_score"], 4), documents[result["index"]])"""


def rerankers(c: Connection) -> str:
    return f"""# pip install rerankers   (model_type "cohere" speaks Xinference's /v1/rerank; url is the full route)
import os
from rerankers import Reranker

ranker = Reranker("{c.model_uid}", model_type="cohere", api_key={KEY}, url="{c.app_base_url}/v1/rerank", verbose=0)
{_documents()}
for result in ranker.rank("{QUERY}", documents).results:
    print(round(result.score, 4), result.document.text)"""


def xinference_client(c: Connection) -> str:
    return f"""import os
from xinference_client import RESTfulClient

client = RESTfulClient("{c.app_base_url}", api_key={KEY})
model = client.get_model("{c.model_uid}")
{_documents()}
answer = model.rerank(documents, "{QUERY}")  # documents first, then the query
for result in answer["results"]:
    print(round(result["relevance_score"], 4), documents[result["index"]])"""


def curl(c: Connection) -> str:
    body = json.dumps({"model": c.model_uid, "query": QUERY, "documents": list(DOCUMENTS)})
    auth = f' -H "Authorization: Bearer ${API_KEY_ENV}"' if c.key else ""
    return f"curl -s {c.app_base_url}/v1/rerank -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}"


# `connect --format` name -> the program.
SNIPPETS = {
    "python": python,
    "llama-index": llama_index,
    "langchain": langchain,
    "haystack": haystack,
    "cohere": cohere,
    "cohere-v2": cohere_v2,
    "langchain-cohere": langchain_cohere,
    "llama-index-cohere": llama_index_cohere,
    "llama-index-xinference": llama_index_xinference,
    "haystack-cohere": haystack_cohere,
    "litellm": litellm,
    "rerankers": rerankers,
    "xinference-client": xinference_client,
    "curl": curl,
}
COHERE_V2 = frozenset({"cohere-v2", "langchain-cohere", "llama-index-cohere", "haystack-cohere"})


def through_route(form: str, c: Connection) -> bool:
    """Does this format's consumer reach Xinference through the compatibility route?"""
    return form in COHERE_V2 or (form == "llama-index-xinference" and c.key is not None)
