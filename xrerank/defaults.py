"""The few names the command line shares with the library, kept here so that `xrerank --help` loads
nothing else: where the server is by default, the variable that holds an API key, the hubs
`download` takes and the formats `connect` writes (each module checks its own list against these)."""

DEFAULT_ENDPOINT = "http://127.0.0.1:9997"
API_KEY_ENV = "XRERANK_API_KEY"  # for the CLI, the integrations and connect's recipes
HUBS = ("modelscope", "huggingface")
MAX_REPLICAS = 256  # one model's replicas, a sanity bound far above a worker's room (records checks it too)
CONNECT_FORMATS = ("text", "env", "dotenv", "python", "llama-index", "langchain", "haystack", "cohere", "cohere-v2",
                   "langchain-cohere", "llama-index-cohere", "llama-index-xinference", "haystack-cohere", "litellm",
                   "rerankers", "xinference-client", "curl", "dify", "ragflow")  # fmt: skip
