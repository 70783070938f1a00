"""Media types and annotations of Docker Model Runner's OCI model artifacts."""

from __future__ import annotations

# Config blobs. v0.1: flat, one file per layer named by its type; v0.2: one layer per
# file, its path inside the model folder in the ``org.cncf.model.filepath`` annotation.
CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
CONFIG_V02 = "application/vnd.docker.ai.model.config.v0.2+json"
CONFIG_TYPES = (CONFIG_V01, CONFIG_V02)

GGUF = "application/vnd.docker.ai.gguf.v3"
SAFETENSORS = "application/vnd.docker.ai.safetensors"
DDUF = "application/vnd.docker.ai.dduf"
LICENSE = "application/vnd.docker.ai.license"
MMPROJ = "application/vnd.docker.ai.mmproj"
CHAT_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"
# Any other file of a v0.2 folder (config.json, tokenizer files); its path is annotated.
MODEL_FILE = "application/vnd.docker.ai.model.file"
# Older safetensors artifacts ship config.json and tokenizer files as one tar layer.
VLLM_CONFIG_TAR = "application/vnd.docker.ai.vllm.config.tar"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_TITLE = "org.opencontainers.image.title"

# Weight layer type per model format (the config's ``format`` field).
WEIGHTS = {"gguf": GGUF, "safetensors": SAFETENSORS, "dduf": DDUF}
