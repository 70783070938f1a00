"""Structured outputs, tool calling and logprobs for the llama.cpp engine.

Pure parts (no model, no I/O) but the last two modules; the engine calls ``engine_hook``.

- ``schema_grammar``: JSON Schema -> GBNF, refusing keywords a grammar cannot enforce
- ``response_format``: the request's response_format -> the answer's schema
- ``tools``: tools / functions / tool_choice / parallel_tool_calls -> ToolRequest
- ``formats``: the call syntaxes (Hermes, Llama 3, Mistral): parsers, forced-call grammar
- ``template``: what a chat template knows about tools (probe renderings)
- ``history``: messages and tools shaped for the template; the preamble for templates
  without tools
- ``output``: generated text -> message or stream deltas (tool_calls); ``forced_stream``:
  the deltas of a forced call, arguments as they come
- ``logprobs``: logprobs / top_logprobs
- ``chat``: all of the above for one request
- ``grammar_sampling``: sampling under a grammar, the picked token checked first
- ``engine_hook``: the above, hooked into ``llamacpp_engine``
"""
