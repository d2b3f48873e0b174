#!/usr/bin/env python3
"""Generates Tests/TLLMChatTemplateTests/Fixtures/chat_templates.json: expected renders of real chat
templates by Python jinja2, configured exactly as transformers' `_compile_jinja_template` does
(src/transformers/utils/chat_template_utils.py): ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]), tojson = json.dumps(ensure_ascii=False, ...),
globals raise_exception (TemplateError) and strftime_now. The `{% generation %}` extension is
omitted: none of these templates uses it.

strftime_now is pinned to FIXED_NOW (naive local time, as datetime.now() is); the Swift tests pass
the same instant with a UTC time zone.

Run (not in CI):  /tmp/venv/bin/python Tests/fixture-scripts/chat_templates.py
Needs: pip install jinja2 (3.1.x).
"""

import json
import os
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXED_NOW = datetime(2025, 3, 14, 9, 26, 53)
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "TLLMChatTemplateTests", "Fixtures", "chat_templates.json"
)

# ---------------------------------------------------------------------------------------------
# Template sources (verbatim; where each copy came from is noted above it)
# ---------------------------------------------------------------------------------------------

# HuggingFaceTB/SmolLM2-135M-Instruct: tokenizer.chat_template of models/SmolLM2-135M-Instruct.Q4_1.gguf.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    'You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
    "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}"
)

# meta-llama/Llama-3.1-8B-Instruct: huggingface/huggingface.js packages/jinja/test/e2e.test.js
# (identical to the copy in huggingface/swift-jinja Tests/Templates/ChatTemplates.swift, `llama3_1`).
LLAMA_3_1 = (
    '{{- bos_token }}\n'
    '{%- if custom_tools is defined %}\n'
    '    {%- set tools = custom_tools %}\n'
    '{%- endif %}\n'
    '{%- if not tools_in_user_message is defined %}\n'
    '    {%- set tools_in_user_message = true %}\n'
    '{%- endif %}\n'
    '{%- if not date_string is defined %}\n'
    '    {%- set date_string = "26 Jul 2024" %}\n'
    '{%- endif %}\n'
    '{%- if not tools is defined %}\n'
    '    {%- set tools = none %}\n'
    '{%- endif %}\n'
    '\n'
    '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    '    {%- set messages = messages[1:] %}\n'
    '{%- else %}\n'
    '    {%- set system_message = "" %}\n'
    '{%- endif %}\n'
    '\n'
    '{#- System message + builtin tools #}\n'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{%- if builtin_tools is defined or tools is not none %}\n'
    '    {{- "Environment: ipython\\n" }}\n'
    '{%- endif %}\n'
    '{%- if builtin_tools is defined %}\n'
    '    {{- "Tools: " + builtin_tools | reject(\'equalto\', \'code_interpreter\') | join(", ") + "\\n\\n"}}\n'
    '{%- endif %}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
    '{%- if tools is not none and not tools_in_user_message %}\n'
    '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n'
    '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
    '    {{- "Do not use variables.\\n\\n" }}\n'
    '    {%- for t in tools %}\n'
    '        {{- t | tojson(indent=4) }}\n'
    '        {{- "\\n\\n" }}\n'
    '    {%- endfor %}\n'
    '{%- endif %}\n'
    '{{- system_message }}\n'
    '{{- "<|eot_id|>" }}\n'
    '\n'
    '{#- Custom tools are passed in a user message with some extra guidance #}\n'
    '{%- if tools_in_user_message and not tools is none %}\n'
    '    {#- Extract the first user message so we can plug it in here #}\n'
    '    {%- if messages | length != 0 %}\n'
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    '        {%- set messages = messages[1:] %}\n'
    '    {%- else %}\n'
    '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n'
    '{%- endif %}\n'
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
    '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
    '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
    '    {{- "Do not use variables.\\n\\n" }}\n'
    '    {%- for t in tools %}\n'
    '        {{- t | tojson(indent=4) }}\n'
    '        {{- "\\n\\n" }}\n'
    '    {%- endfor %}\n'
    '    {{- first_user_message + "<|eot_id|>"}}\n'
    '{%- endif %}\n'
    '\n'
    '{%- for message in messages %}\n'
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    '        {%- if not message.tool_calls|length == 1 %}\n'
    '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
    '        {%- endif %}\n'
    '        {%- set tool_call = message.tool_calls[0].function %}\n'
    '        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n'
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    '            {{- "<|python_tag|>" + tool_call.name + ".call(" }}\n'
    '            {%- for arg_name, arg_val in tool_call.arguments | items %}\n'
    '                {{- arg_name + \'="\' + arg_val + \'"\' }}\n'
    '                {%- if not loop.last %}\n'
    '                    {{- ", " }}\n'
    '                {%- endif %}\n'
    '                {%- endfor %}\n'
    '            {{- ")" }}\n'
    '        {%- else  %}\n'
    "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    '            {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
    '            {{- \'"parameters": \' }}\n'
    '            {{- tool_call.arguments | tojson }}\n'
    '            {{- "}" }}\n'
    '        {%- endif %}\n'
    '        {%- if builtin_tools is defined %}\n'
    "            {#- This means we're in ipython mode #}\n"
    '            {{- "<|eom_id|>" }}\n'
    '        {%- else %}\n'
    '            {{- "<|eot_id|>" }}\n'
    '        {%- endif %}\n'
    '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
    '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
    '        {%- if message.content is mapping or message.content is iterable %}\n'
    '            {{- message.content | tojson }}\n'
    '        {%- else %}\n'
    '            {{- message.content }}\n'
    '        {%- endif %}\n'
    '        {{- "<|eot_id|>" }}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    '{%- endif %}\n'
)

# meta-llama/Llama-3.2-1B/3B-Instruct (uses strftime_now): huggingface/swift-jinja
# Tests/Templates/ChatTemplates.swift, `llama3_2` (before commit 80d3567).
LLAMA_3_2 = (
    '{{- bos_token }}\n'
    '{%- if custom_tools is defined %}\n'
    '    {%- set tools = custom_tools %}\n'
    '{%- endif %}\n'
    '{%- if not tools_in_user_message is defined %}\n'
    '    {%- set tools_in_user_message = true %}\n'
    '{%- endif %}\n'
    '{%- if not date_string is defined %}\n'
    '    {%- if strftime_now is defined %}\n'
    '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
    '    {%- else %}\n'
    '        {%- set date_string = "26 Jul 2024" %}\n'
    '    {%- endif %}\n'
    '{%- endif %}\n'
    '{%- if not tools is defined %}\n'
    '    {%- set tools = none %}\n'
    '{%- endif %}\n'
    '\n'
    '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    '    {%- set messages = messages[1:] %}\n'
    '{%- else %}\n'
    '    {%- set system_message = "" %}\n'
    '{%- endif %}\n'
    '\n'
    '{#- System message #}\n'
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{%- if tools is not none %}\n'
    '    {{- "Environment: ipython\\n" }}\n'
    '{%- endif %}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
    '{%- if tools is not none and not tools_in_user_message %}\n'
    '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n'
    '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
    '    {{- "Do not use variables.\\n\\n" }}\n'
    '    {%- for t in tools %}\n'
    '        {{- t | tojson(indent=4) }}\n'
    '        {{- "\\n\\n" }}\n'
    '    {%- endfor %}\n'
    '{%- endif %}\n'
    '{{- system_message }}\n'
    '{{- "<|eot_id|>" }}\n'
    '\n'
    '{#- Custom tools are passed in a user message with some extra guidance #}\n'
    '{%- if tools_in_user_message and not tools is none %}\n'
    '    {#- Extract the first user message so we can plug it in here #}\n'
    '    {%- if messages | length != 0 %}\n'
    "        {%- set first_user_message = messages[0]['content']|trim %}\n"
    '        {%- set messages = messages[1:] %}\n'
    '    {%- else %}\n'
    '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n'
    '{%- endif %}\n'
    "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
    '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
    '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
    '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
    '    {{- "Do not use variables.\\n\\n" }}\n'
    '    {%- for t in tools %}\n'
    '        {{- t | tojson(indent=4) }}\n'
    '        {{- "\\n\\n" }}\n'
    '    {%- endfor %}\n'
    '    {{- first_user_message + "<|eot_id|>"}}\n'
    '{%- endif %}\n'
    '\n'
    '{%- for message in messages %}\n'
    "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
    "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "    {%- elif 'tool_calls' in message %}\n"
    '        {%- if not message.tool_calls|length == 1 %}\n'
    '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
    '        {%- endif %}\n'
    '        {%- set tool_call = message.tool_calls[0].function %}\n'
    "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
    '        {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
    '        {{- \'"parameters": \' }}\n'
    '        {{- tool_call.arguments | tojson }}\n'
    '        {{- "}" }}\n'
    '        {{- "<|eot_id|>" }}\n'
    '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
    '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
    '        {%- if message.content is mapping or message.content is iterable %}\n'
    '            {{- message.content | tojson }}\n'
    '        {%- else %}\n'
    '            {{- message.content }}\n'
    '        {%- endif %}\n'
    '        {{- "<|eot_id|>" }}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    '{%- endif %}\n'
)

# Qwen/Qwen2.5-7B-Instruct (tools): huggingface/huggingface.js packages/jinja/test/e2e.test.js
# (identical to huggingface/swift-jinja's `qwen2_5`).
QWEN_2_5 = (
    '{%- if tools %}\n'
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    '    {%- else %}\n'
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    '    {%- endif %}\n'
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n'
    '        {{- "\\n" }}\n'
    '        {{- tool | tojson }}\n'
    '    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    '{%- else %}\n'
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    '    {%- else %}\n'
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}\n'
    '{%- for message in messages %}\n'
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    '        {%- if message.content %}\n'
    "            {{- '\\n' + message.content }}\n"
    '        {%- endif %}\n'
    '        {%- for tool_call in message.tool_calls %}\n'
    '            {%- if tool_call.function is defined %}\n'
    '                {%- set tool_call = tool_call.function %}\n'
    '            {%- endif %}\n'
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    '            {{- tool_call.name }}\n'
    '            {{- \'", "arguments": \' }}\n'
    '            {{- tool_call.arguments | tojson }}\n'
    "            {{- '}\\n</tool_call>' }}\n"
    '        {%- endfor %}\n'
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    '        {%- endif %}\n'
    "        {{- '\\n<tool_response>\\n' }}\n"
    '        {{- message.content }}\n'
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    '        {%- endif %}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|im_start|>assistant\\n' }}\n"
    '{%- endif %}\n'
)

# Qwen/Qwen3-0.6B (enable_thinking, <think> blocks, reasoning_content, tools): the PyPI sdist of
# llama-cpp-python 0.3.36, vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja (no trailing newline).
QWEN_3 = (
    '{%- if tools %}\n'
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    '    {%- endif %}\n'
    '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n'
    '        {{- "\\n" }}\n'
    '        {{- tool | tojson }}\n'
    '    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    '{%- else %}\n'
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}\n'
    '{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n'
    '{%- for message in messages[::-1] %}\n'
    '    {%- set index = (messages|length - 1) - loop.index0 %}\n'
    '    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith(\'<tool_response>\') and message.content.endswith(\'</tool_response>\')) %}\n'
    '        {%- set ns.multi_step_tool = false %}\n'
    '        {%- set ns.last_query_index = index %}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- for message in messages %}\n'
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    '        {%- set content = message.content %}\n'
    "        {%- set reasoning_content = '' %}\n"
    '        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}\n'
    '            {%- set reasoning_content = message.reasoning_content %}\n'
    '        {%- else %}\n'
    "            {%- if '</think>' in message.content %}\n"
    "                {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}\n"
    "                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    '            {%- endif %}\n'
    '        {%- endif %}\n'
    '        {%- if loop.index0 > ns.last_query_index %}\n'
    '            {%- if loop.last or (not loop.last and reasoning_content) %}\n'
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    '            {%- else %}\n'
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    '            {%- endif %}\n'
    '        {%- else %}\n'
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    '        {%- endif %}\n'
    '        {%- if message.tool_calls %}\n'
    '            {%- for tool_call in message.tool_calls %}\n'
    '                {%- if (loop.first and content) or (not loop.first) %}\n'
    "                    {{- '\\n' }}\n"
    '                {%- endif %}\n'
    '                {%- if tool_call.function %}\n'
    '                    {%- set tool_call = tool_call.function %}\n'
    '                {%- endif %}\n'
    '                {{- \'<tool_call>\\n{"name": "\' }}\n'
    '                {{- tool_call.name }}\n'
    '                {{- \'", "arguments": \' }}\n'
    '                {%- if tool_call.arguments is string %}\n'
    '                    {{- tool_call.arguments }}\n'
    '                {%- else %}\n'
    '                    {{- tool_call.arguments | tojson }}\n'
    '                {%- endif %}\n'
    "                {{- '}\\n</tool_call>' }}\n"
    '            {%- endfor %}\n'
    '        {%- endif %}\n'
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    '        {%- endif %}\n'
    "        {{- '\\n<tool_response>\\n' }}\n"
    '        {{- message.content }}\n'
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    '        {%- endif %}\n'
    '    {%- endif %}\n'
    '{%- endfor %}\n'
    '{%- if add_generation_prompt %}\n'
    "    {{- '<|im_start|>assistant\\n' }}\n"
    '    {%- if enable_thinking is defined and enable_thinking is false %}\n'
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    '    {%- endif %}\n'
    '{%- endif %}'
)

# TinyLlama/TinyLlama-1.1B-Chat-v1.0 ships the Zephyr template; this copy is keyed
# "HuggingFaceH4/zephyr-7b-beta" in huggingface/huggingface.js packages/jinja/test/e2e.test.js.
TINYLLAMA = (
    '{% for message in messages %}\n'
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n"
    "' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n"
    "'  + message['content'] + eos_token }}\n"
    '{% endif %}\n'
    '{% if loop.last and add_generation_prompt %}\n'
    "{{ '<|assistant|>' }}\n"
    '{% endif %}\n'
    '{% endfor %}'
)

# mistralai/Mistral-7B-Instruct-v0.1 (role alternation via raise_exception): huggingface/huggingface.js
# e2e.test.js, keyed "TheBloke/Mistral-7B-Instruct-v0.1-GPTQ" (the quantiser's copy of the original).
MISTRAL_V0_1 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# mistralai/Mistral-7B-Instruct-v0.2, the later "v1" template with an optional system message:
# ggml-org/llama.cpp tests/test-chat-template.cpp.
MISTRAL_V0_2 = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an "
    "initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"
)

# mistralai/Mistral-7B-Instruct-v0.3 (tools, JSON schema variant): huggingface/huggingface.js e2e.test.js,
# keyed "mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)".
MISTRAL_V0_3 = (
    '{{- bos_token }}\n'
    "{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}\n"
    '{%- for message in messages %}\n'
    "    {%- if message['role'] == 'user' %}\n"
    '        {%- if tools and (message == user_messages[-1]) %}\n'
    "            {{- ' [AVAILABLE_TOOLS] [' }}\n"
    '            {%- for tool in tools %}\n'
    '\t\t{%- set tool = tool.function %}\n'
    '\t\t{{- \'{"type": "function", "function": {\' }}\n'
    '\t\t{%- for key, val in tool|items if key != "return" %}\n'
    '\t\t    {%- if val is string %}\n'
    '\t\t\t{{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
    '\t\t    {%- else %}\n'
    '\t\t\t{{- \'"\' + key + \'": \' + val|tojson }}\n'
    '\t\t    {%- endif %}\n'
    '\t\t    {%- if not loop.last %}\n'
    '\t\t\t{{- ", " }}\n'
    '\t\t    {%- endif %}\n'
    '\t\t{%- endfor %}\n'
    '\t\t{{- "}}" }}\n'
    '                {%- if not loop.last %}\n'
    '                    {{- ", " }}\n'
    '                {%- else %}\n'
    '                    {{- "]" }}\n'
    '                {%- endif %}\n'
    '            {%- endfor %}\n'
    "            {{- ' [/AVAILABLE_TOOLS]' }}\n"
    '            {%- endif %}\n'
    "        {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    '        {%- if message.tool_calls is defined and message.tool_calls|length > 0 %}\n'
    "            {{- ' [TOOL_CALLS] [' }}\n"
    '            {%- for tool_call in message.tool_calls %}\n'
    '                {{- {"name": tool_call.function.name, "arguments": tool_call.function.arguments, "id": tool_call.id}|tojson }}\n'
    '                {%- if not loop.last %}\n'
    '                    {{- ", " }}\n'
    '                {%- endif %}\n'
    '            {%- endfor %}\n'
    "            {{- '] ' }}\n"
    '            {{- eos_token }}\n'
    '    \t{%- elif message.content is defined %}\n'
    "\t    {{- ' ' + message.content + ' ' + eos_token}}\n"
    '        {%- endif %}\n'
    "    {%- elif message['role'] == 'tool' %}\n"
    "        {{- ' [TOOL_RESULTS] ' }}\n"
    '        {{- \'{"call_id": "\' + message.tool_call_id + \'", "content": \' + message.content|string + \'}\' }}\n'
    "        {{- ' [/TOOL_RESULTS] ' }}\n"
    '    {%- endif %}\n'
    '{%- endfor %}\n'
)

# google/gemma-2b-it (Gemma instruct; raises on a system role): huggingface/swift-jinja
# Tests/Templates/ChatTemplateTests.swift, testGoogleGemma2bIt (before commit 80d3567).
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n"
    "' + message['content'] | trim + '<end_of_turn>\n"
    "' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n"
    "'}}{% endif %}"
)

# name -> (source, special tokens passed as template variables, whether the template renders tools)
TEMPLATES = {
    "smollm2": (SMOLLM2, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, False),
    "llama-3.1": (LLAMA_3_1, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True),
    "llama-3.2": (LLAMA_3_2, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True),
    "qwen-2.5": (QWEN_2_5, {"eos_token": "<|im_end|>"}, True),
    "qwen-3": (QWEN_3, {"eos_token": "<|im_end|>"}, True),
    "tinyllama": (TINYLLAMA, {"bos_token": "<s>", "eos_token": "</s>"}, False),
    "mistral-v0.1": (MISTRAL_V0_1, {"bos_token": "<s>", "eos_token": "</s>"}, False),
    "mistral-v0.2": (MISTRAL_V0_2, {"bos_token": "<s>", "eos_token": "</s>"}, False),
    "mistral-v0.3": (MISTRAL_V0_3, {"bos_token": "<s>", "eos_token": "</s>"}, True),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>"}, False),
}

# ---------------------------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. \"San Francisco, CA\""},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 1.0},
                    "detailed": {"type": "boolean", "nullable": True, "examples": [None, False]},
                },
                "required": ["location"],
            },
            "return": {"type": "number", "description": "Temperature in the requested unit, e.g. 22.5."},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "translate",
            "description": "Translate text — keeps “quotes”, ümlauts and emoji 🙂 intact.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "target": {"type": "string"}},
                "required": ["text", "target"],
            },
        },
    },
]

TOOL_CALL = {
    "id": "call12345",
    "type": "function",
    "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}},
}

# Arguments as a JSON string, as OpenAI clients send them back.
TOOL_CALL_STRING_ARGUMENTS = {
    "id": "call67890",
    "type": "function",
    "function": {"name": "get_current_weather", "arguments": '{"location": "Lyon, France"}'},
}


def thinking(content, reasoning):
    """An assistant turn with its reasoning as a separate field (what an OpenAI-compatible server returned)."""
    return {"role": "assistant", "content": content, "reasoning_content": reasoning}

CONVERSATIONS = {
    "single_user": {"messages": [user("Hello!")]},
    "system_user": {"messages": [SYSTEM, user("What is the capital of France?")]},
    "multi_turn": {
        "messages": [
            user("Hi there"),
            assistant("Hello! How can I help?"),
            user("Tell me a joke about \"quotes\" and 'apostrophes'."),
        ]
    },
    "system_multi_turn_ending_assistant": {
        "messages": [SYSTEM, user("2+2?"), assistant("4"), user("And 3+3?"), assistant("6")]
    },
    "ten_messages": {
        "messages": [SYSTEM]
        + [m for i in range(4) for m in (user(f"Question {i + 1}?"), assistant(f"Answer {i + 1}."))]
        + [user("Last question?")]
    },
    "whitespace_unicode": {
        "messages": [
            user("  Héllo — “quotes” 🙂\n\tsecond line  \n"),
            assistant("   padded answer   "),
            user("{{ not a tag }} {% raw %} {# nor a comment #}"),
        ]
    },
    "empty_content": {"messages": [user("")]},
    "non_alternating": {"messages": [user("first"), user("second")]},
    "assistant_first": {"messages": [assistant("I speak first."), user("ok")]},
    "tools_user": {"messages": [SYSTEM, user("What's the weather in Paris?")], "tools": TOOLS, "needs_tools": True},
    "tools_no_system": {"messages": [user("What's the weather in Paris?")], "tools": TOOLS, "needs_tools": True},
    "tools_call_and_result": {
        "messages": [
            user("What's the weather in Paris?"),
            {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "22.0"},
        ],
        "tools": TOOLS,
        "needs_tools": True,
    },
    "tools_only_system": {"messages": [SYSTEM], "tools": TOOLS, "needs_tools": True},
    # Thinking turns (Qwen3, QwQ, DeepSeek-R1): reasoning as a message field, as <think> tags in the content, and
    # the latest turn after the last user query (kept) versus earlier ones (stripped by the template).
    "thinking_history": {
        "messages": [
            SYSTEM,
            user("What is 2+2?"),
            thinking("4", "\nThe user asks for 2+2.\nThat is 4.\n"),
            user("And 3+3?"),
            thinking("\n\n6", "3+3 = 6."),
            user("Thanks. Now 5+5?"),
        ]
    },
    "thinking_ending_assistant": {
        "messages": [user("Hi"), thinking("\nHello! How can I help?", "\n\nThe user greets me; greet back.\n\n")]
    },
    "thinking_empty_reasoning": {"messages": [user("Hi"), thinking("Hello!", ""), user("Bye")]},
    "think_tags_in_content": {
        "messages": [
            user("2+2?"),
            assistant("<think>\nA simple sum.\n</think>\n\n4"),
            user("3+3?"),
            {"role": "assistant", "content": "<think>Another sum.</think>6", "reasoning_content": None},
        ]
    },
    "think_tags_latest_turn": {
        "messages": [user("2+2?"), assistant("4"), user("3+3?"), assistant("<think>\n\nSix.\n</think>\n\n6")]
    },
    "thinking_tool_round": {
        "messages": [
            SYSTEM,
            user("What's the weather in Paris and in Lyon?"),
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "I should call the weather tool twice.",
                "tool_calls": [TOOL_CALL, TOOL_CALL_STRING_ARGUMENTS],
            },
            {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "22.0"},
            {"role": "tool", "tool_call_id": "call67890", "name": "get_current_weather", "content": "19.5"},
            thinking("It is 22 °C in Paris and 19.5 °C in Lyon.", "Both tools answered."),
            user("<tool_response>\nnot really a tool response\n</tool_response>"),
            user("And tomorrow?"),
            {"role": "assistant", "content": "Let me check.", "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "23.0"},
        ],
        "tools": TOOLS,
        "needs_tools": True,
    },
    "thinking_tool_result_last": {
        "messages": [
            user("Weather in Paris?"),
            {"role": "assistant", "content": "", "reasoning_content": "Call the tool.", "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "22.0"},
            user("<tool_response>\n22.0\n</tool_response>"),
        ],
        "tools": TOOLS,
        "needs_tools": True,
    },
}

# Extra template variables (transformers' **kwargs) for some templates.
EXTRA_CASES = [
    ("llama-3.1", "system_user", {"date_string": "14 Mar 2025"}),
    ("llama-3.1", "tools_user", {"tools_in_user_message": False}),
    ("llama-3.1", "tools_user", {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}),
    ("llama-3.2", "tools_user", {"tools_in_user_message": False, "date_string": "01 Jan 2025"}),
] + [
    # Qwen3's switch, off and on (the plain cases leave it undefined), as chat_template_kwargs passes it.
    ("qwen-3", conversation, {"enable_thinking": enabled})
    for conversation in ("single_user", "system_user", "thinking_history", "thinking_tool_round", "tools_user")
    for enabled in (False, True)
] + [("qwen-3", "single_user", {"enable_thinking": None}), ("qwen-3", "single_user", {"enable_thinking": 0})]

# Small templates exercising one feature each, rendered with SNIPPET_CONTEXT (plus per-snippet variables).
SNIPPET_CONTEXT = {
    "d": {"a": 1, "b": [2]},
    "x": {"k": "v", "content": "c"},
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    "nums": [3, 1, 2],
    "words": ["b", "A", "a"],
    "text": "  Hello, World  ",
}

SNIPPETS = [
    # whitespace control: trim_blocks, lstrip_blocks, -, +, comments, trailing newline
    "a\n  {# c #}\nb",
    "a  {# c #}  \nb",
    "  {% if true %}\n    yes\n  {% endif %}\nend\n",
    "{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}\n",
    "a   {%- if true -%}   b   {%- endif -%}   c",
    "a {{- 'b' -}} c\n\n",
    "  {%+ if true %}x{% endif %}",
    "{% if true +%}\nx{% endif %}",
    "x\n\n",
    "x\r\ny\rz\n",
    "{# comment -#}\n\n  after",
    "{% raw %}{{ x }}{% endraw %}",
    "a\n    {% raw %}  {{ y }} {% endraw %}\nb",
    "\t{% if true %}tab{% endif %}",
    "line\n  {{ 'var keeps indent' }}\n",
    # literals and printing
    "{{ 'it\\'s' }} {{ ['it\\'s', \"q\\\"\"] }}",
    "{{ {'a': [1, 2.5, None, True, 'x\\'y'] } }}",
    "{{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 1.5e-5 }} {{ 3.0 }} {{ 9.5e15 }} {{ -0.0 }} {{ 1e-7 }}",
    "{{ 0.1 + 0.2 }} {{ 1e100 }} {{ 123456789012345678.0 }} {{ 1_000 }} {{ 0x1F }} {{ 0b101 }} {{ 0o17 }}",
    "{{ '\\u00e9\\x41\\n\\d\\t' }}|{{ 'a' 'b' }}",
    "{{ none }} {{ True }} {{ true }} {{ None }} {{ [] }} {{ {} }} {{ [[]] }}",
    "{{ x }} {{ messages[0] }} {{ '\\x01é🙂\\u200b' ~ ['\\x01é🙂\\u200b\\\\'] }}",
    "{{ undefined_v }}|{{ undefined_v ~ 'x' }}|{{ [undefined_v] }}",
    # operators
    "{{ 'a' ~ 1 ~ none ~ undefined_v }}",
    "{{ -1|abs }} {{ 2**3**2 }} {{ 2 ** -1 }} {{ 1 + 2 * 3 - 4 / 2 }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ -7.5 // 2 }}",
    "{{ 'ab' * 3 }} {{ [1] * 2 }} {{ 3 * 'x' }} {{ 'a' * -1 }}|",
    "{{ true + 1 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ [1] == [1.0] }} {{ {'a': 1} == {'a': 1.0} }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 2.0 }}",
    "{{ 'b' in 'abc' }} {{ 'z' not in 'abc' }} {{ 1 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 'q' in undefined_v }}",
    "{{ not true == false }} {{ not 1 in [1] }} {{ 1 and 'x' }} {{ 0 or 'y' }} {{ none or [] }}|{{ '' and 1 }}|",
    "{{ 'x' if true else 'y' }} {{ 'x' if false else 'y' if false else 'z' }} {{ 1 if false }}|",
    "{{ ('a' ~ 'b')|upper }} {{ 'a' + 'b'|upper }} {{ -2|abs }} {{ - 3 }} {{ +4 }}",
    "{{ '%s and %s' % ('a', 'b') }} {{ '%d%%' % 5 }} {{ '%s' % 'x' }} {{ '%.2f' % 3.14159 }} {{ '%r' % 'q' }}",
    # subscripts, slices, attributes
    "{{ 'abc'[::-1] }} {{ [1,2,3][1:] }} {{ 'héllo'[1:3] }} {{ nums[-1] }} {{ nums[5] }}|",
    "{{ 'abc'[1] }} {{ 'abc'[-1] }} {{ 'abc'[5] }}|{{ [1,2,3][::2] }} {{ [1,2,3][-2:] }} {{ [1,2,3][:-1] }}",
    "{{ [1,2,3][5:] }} {{ 'abcdef'[4:1:-1] }} {{ nums[:] }} {{ nums[::-2] }} {{ 'abc'[-10:10] }}",
    "{{ {'a':1}['a'] }} {{ {'a':1}.a }} {{ {'a':{'b':2}}.a.b }} {{ x['k'] }}{{ x.k }} {{ nums.0 }}",
    "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[0]['role']|capitalize }}",
    "{{ none.x }}|{{ 3.real }}|{{ 'abc'.x }}|{{ [1,2][5] }}|{{ (none)['a'] }}|{{ x.nope }}|{{ x['nope'] }}|",
    "{% set t = (1, 2) %}{{ t[0] }}{{ t|length }}",
    # string methods
    "{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ '  a  b  '.split(none, 1) }}",
    "{{ 'a\\nb'.splitlines() }} {{ ',a,'.split(',') }} {{ 'abc'.find('c') }} {{ 'aXbX'.rsplit('X', 1) }} {{ 'a  b  '.rsplit() }}",
    "{{ 'hello world-foo'.title() }} {{ \"o'neil\".title() }} {{ 'a1b'.title() }} {{ 'hello wORLD'.title() }}",
    "{{ '  a '.strip() }}|{{ 'xax'.strip('x') }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|{{ 'abc'.strip('ac') }}",
    "{{ 'a-b'.replace('-', '+') }} {{ 'aBc'.upper() }} {{ 'AbC'.lower() }} {{ 'hello'.capitalize() }} {{ 'ß'.upper() }}",
    "{{ 'aaa'.replace('a','b',1) }} {{ 'abc'.replace('','-',2) }} {{ 'abc'.replace('', '-') }}",
    "{{ 'abc'.startswith(('x','a')) }} {{ 'abc'.endswith('c') }} {{ 'abc'.startswith('b') }}",
    "{{ 'abc'.count('b') }} {{ [1,1].count(1) }} {{ [1,2].index(2) }} {{ 'x'.zfill(3) }} {{ 'ab'.center(6, '*') }}",
    "{{ '1'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'AbC'.swapcase() }} {{ 'abc'.removeprefix('a') }}",
    "{{ 'hello {0} {name}'.format('a', name='b') }} {{ '{}-{}'.format(1, 2) }} {{ '{{}}{!r}'.format('q') }}",
    "{{ 'a'.join(['1', '2']) }} {{ ', '.join(words) }}",
    # dict methods
    "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 5) }} {{ d.keys()|list }} {{ d.values()|list }}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for k in d %}{{ k }}{% endfor %}",
    "{{ d.pop }}|{{ nums.append }}|{{ d.copy() }}",
    # filters
    "{{ text|trim }}|{{ 'xxhixx'|trim('x') }}|{{ none|trim }}|{{ text|length }}|{{ text|count }}",
    "{{ nums|length }} {{ d|length }} {{ undefined_v|length }} {{ ''|length }}",
    "{{ x|tojson }} {{ 'é\"\\n\\x01\\t'|tojson }} {{ none|tojson }} {{ true|tojson }} {{ 1.0|tojson }} {{ (1, 2)|tojson }}",
    "{{ {'a':1}|tojson(indent=2) }} {{ [1,{'a':[]}, {}]|tojson(indent=2) }}",
    "{{ {'b':1, 'a':2}|tojson(sort_keys=true) }} {{ [1,2]|tojson(separators=(',', ':')) }} {{ {'a':1}|tojson(indent='\\t') }}",
    "{{ 'ü'|tojson(ensure_ascii=true) }} {{ '🙂'|tojson(ensure_ascii=true) }} {{ x|tojson(indent=0) }}",
    "{{ undefined_v|default('dflt') }} {{ ''|default('e') }} {{ ''|default('e', true) }} {{ none|d('n') }} {{ 0|d(5, boolean=true) }}",
    "{{ 'hello world-foo'|title }} {{ \"they're\"|title }} {{ 'hELLO'|capitalize }} {{ 'Ab'|lower }} {{ 'ab'|upper }}",
    "{{ ['a','b']|join(', ') }} {{ [1,2]|join }} {{ messages|join(',', attribute='role') }}",
    "{{ [1,2]|first }} {{ []|first }}|{{ 'abc'|first }} {{ 'abc'|last }} {{ {'a':1,'b':2}|last }} {{ nums|last }}",
    "{{ 'abc'|list }} {{ 'abc'|reverse }} {{ [1,2]|reverse|list }} {{ d|list }}",
    # (tuples print as lists here, so pairs are shown through tojson)
    "{{ d|items|list|tojson }} {{ undefined_v|items|list }} {{ d|dictsort|tojson }} {{ {'b':1,'a':2}|dictsort(by='value')|tojson }}",
    "{{ '1.9'|int }} {{ 'x'|int }} {{ '3'|float }} {{ none|string }} {{ '0x1A'|int(base=16) }} {{ '12'|int(base=8) }} {{ ' 7 '|int }}",
    "{{ 1.5|int }} {{ -1.5|round }} {{ 1|float }} {{ 1.0|int }} {{ 'x'|float }} {{ 'x'|int(-1) }} {{ true|int }}",
    "{{ 12.5|round }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ 2.5|round(0, 'floor') }} {{ 5|round }} {{ 2.675|round(2) }} {{ 1.25|round(1, 'ceil') }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list }} {{ messages|map(attribute='role')|list }}",
    "{{ messages|map(attribute='nope', default='d')|list }} {{ ['a','b']|map('upper')|list }} {{ nums|map('string')|join('-') }}",
    "{{ [1,2,3]|select('odd')|list }} {{ [1,0,2]|select|list }} {{ [1,2,3]|reject('even')|list }} {{ messages|rejectattr('role')|list }}",
    "{{ messages|selectattr('content')|map(attribute='content')|list }} {{ [1,2,3,4]|select('divisibleby', 2)|list }} {{ [1,5,9]|select('gt', 4)|list }}",
    "{{ nums|sort }} {{ words|sort }} {{ words|unique|list }} {{ words|sort(case_sensitive=true) }} {{ nums|sort(reverse=true) }}",
    "{{ messages|sort(attribute='role')|map(attribute='role')|join(',') }} {{ [1,1,2]|unique|list }}",
    "{{ [1,2]|sum }} {{ nums|max }} {{ nums|min }} {{ words|max }} {{ []|max }}|{{ messages|sum(attribute='nope', start=0) if false else 0 }}",
    "{{ 'x'|indent(2, true) }}|{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb\\n'|indent(2, blank=true) }}|{{ 'a\\nb'|indent('> ') }}",
    "{{ 'ab'|center(6) }}|{{ 'a b c'|wordcount }}|{{ '<a>&\\'\"'|e }}|{{ 'x'|safe }}",
    "{{ [1,2,3]|batch(2)|list }} {{ [1,2,3]|batch(2, 'z')|list }} {{ 'abc'|replace('b', 'B') }} {{ 'aaa'|replace('a', 'b', 2) }}",
    "{{ '%s-%d'|format('a', 3) }} {{ x|attr('k') }}|{{ 'A'|attr('lower') is callable }}",
    # tests
    "{{ x is iterable }} {{ 'a' is iterable }} {{ 'a' is sequence }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ none is none }}",
    "{{ 1 is divisibleby 1 }} {{ 4 is divisibleby(2) }} {{ 3 is odd }} {{ 3 is even }} {{ 'A' is upper }} {{ 'a' is lower }} {{ x is mapping }}",
    "{{ 1 is eq 1 }} {{ 1 is lt 2 }} {{ 1 is in [1] }} {{ raise_exception is callable }} {{ x is defined }} {{ nope is undefined }}",
    "{{ 1.0 is float }} {{ 1 is float }} {{ 'a' is string }} {{ none is string }} {{ false is false }} {{ 0 is false }} {{ true is boolean }}",
    "{{ none is sameas none }} {{ undefined_v is defined }} {{ x.k is not defined }} {{ x.k is string and x.k is not none }}",
    "{{ 'upper' is filter }} {{ 'nope' is filter }} {{ 'odd' is test }} {{ [1] is sequence }} {{ 3 is iterable }}",
    # statements
    "{% for i in [1,2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}[{{ y }}]",
    "{% set y = 0 %}{% for i in [1,2] %}{{ y }}{% set y = i %}{{ y }}{% endfor %}{{ y }}",
    "{% if true %}{% set z = 5 %}{% endif %}{{ z }} {% for a in [] %}x{% else %}empty{% endfor %}",
    "{% for i in 'ab' %}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.revindex }}{{ loop.length }}{% endfor %}",
    "{% for i in [1,2,3] if i > 1 %}{{ loop.index }}/{{ loop.length }} {% endfor %}",
    "{% for i in range(3) %}{{ loop.cycle('a','b') }}{{ loop.depth }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.index0 }}{% endfor %}",
    "{% for a, b in [[1,2],[3,4]] %}{{ a }}{{ b }}{% endfor %} {% for (a, b) in [[5,6]] %}{{ a }}{{ b }}{% endfor %}",
    "{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% for i in [1, 2] %}{% for j in [3, 4] %}{{ loop.index }}{{ i }}{{ j }},{% endfor %}{{ loop.index }};{% endfor %}",
    "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set c = 'x', 'y' %}{{ c|join }}",
    "{% set ns = namespace(a=1) %}{% for i in [1,2] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }} {{ ns }}",
    "{% set ns = namespace(found=false, items=[]) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.items }} {{ ns.nope }}|",
    "{% macro m(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}{{ m('p', 'q') }}",
    "{% macro m() %}{{ y }}{% endmacro %}{% set y = 1 %}{{ m() }}",
    "{% macro m(a) %}{{ a }}{{ varargs|list }}{{ kwargs }}{% endmacro %}{{ m(1, 2, b=3) }}",
    "{% macro m(a) %}<{{ a }}>{% endmacro %}{{ m() }}|{{ m|string if false else 'macro' }}",
    "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n }}*{{ fact(n - 1) }}{% endif %}{% endmacro %}{{ fact(4) }}",
    "{% macro m2() %}<{{ caller(5) }}>{% endmacro %}{% call(x) m2() %}c{{ x }}{% endcall %}",
    "{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inner{% endcall %}",
    "{% filter upper %}abc{{ 'd' }}{% endfilter %} {% set s %}a{{ 1 }}{% endset %}{{ s }} {% set s2 | upper %}b{% endset %}{{ s2 }}",
    "{% with a = 1, b = 2 %}{{ a }}{{ b }}{% endwith %}{{ a }}|",
    "{{ dict(a=1, b='x') }} {{ namespace() }} {{ namespace(d) }} {{ dict(d, c=3) }}",
    "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j %I%p %y %a %%') }}",
    "{{ strftime_now('%-d/%-m %e %-H:%M %F %T %w %u %D %R') }}",
    "{% if messages %}has{% elif x %}x{% else %}none{% endif %} {% if [] %}a{% elif 0 %}b{% else %}c{% endif %}",
    # what thinking templates do with <think> blocks (Qwen3, QwQ, DeepSeek-R1)
    "{{ '<think>\\nr\\n</think>\\n\\nc'.split('</think>')[-1].lstrip('\\n') }}|{{ 'c'.split('</think>')[0] }}|{{ ''.split('x') }}",
    "{{ '\\n\\nr\\n</think>c'.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|{{ '\\n\\n'.strip('\\n') }}|",
    "{{ '</think>' in 'a</think>' }} {{ 'a</think>b</think>c'.split('</think>') }} {{ ' \\n x \\n'.strip('\\n') }}|",
    "{{ false is false }} {{ 0 is false }} {{ none is false }} {{ undefined_v is false }} {{ '' is false }} {{ true is true }}",
    "{{ 'x' is string }} {{ {} is string }} {{ messages[::-1]|map(attribute='role')|join }} {{ (messages|length - 1) - 1 }}",
    "{% set ns = namespace(i=messages|length - 1) %}{% for m in messages[::-1] %}{% set ns.i = (messages|length - 1) - loop.index0 %}{{ ns.i }}{% endfor %}",
]

# Snippets that must fail; the Swift side checks that they throw.
ERROR_SNIPPETS = [
    "{{ foo.bar }}",
    "{{ foo['bar'] }}",
    "{% if foo.bar is defined %}y{% endif %}",
    "{{ undefined_v + 'a' }}",
    "{{ 1 < 'a' }}",
    "{{ 1/0 }}",
    "{{ 'a' in none }}",
    "{{ 1 in 'abc' }}",
    "{% for q in none %}{% endfor %}",
    "{% for q in 3 %}{% endfor %}",
    "{{ 'x' + 1 }}",
    "{{ [1] + none }}",
    "{{ range(200000)|length }}",
    "{{ none|length }}",
    "{{ 5|join }}",
    "{{ undefined_v|tojson }}",
    "{% for a, b in [[1,2,3]] %}{% endfor %}",
    "{{ raise_exception('custom failure: ' ~ 42) }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
    "{{ 5 // 0 }}",
    "{{ nums.append(4) }}",
    "{{ 3|items|list }}",
    "{{ 'abc'.split('') }}",
    "{{ none.startswith('<tool_response>') }}",
    "{{ '</think>' in none }}",
]

# ---------------------------------------------------------------------------------------------
# Rendering, as transformers does it
# ---------------------------------------------------------------------------------------------


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return FIXED_NOW.strftime(format)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def render(template, tokens, conversation, add_generation_prompt, extra):
    # apply_chat_template: messages, tools, documents, add_generation_prompt, then special tokens and kwargs.
    context = {
        "messages": conversation["messages"],
        "tools": conversation.get("tools"),
        "documents": None,
        "add_generation_prompt": add_generation_prompt,
        **tokens,
        **extra,
    }
    try:
        return {"expected": template.render(**context)}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:
            return {"error": {"kind": "raised", "message": str(e)}}
        return {"error": {"kind": type(e).__name__, "message": str(e)}}
    except Exception as e:  # TypeError etc. from Python operations
        return {"error": {"kind": type(e).__name__, "message": str(e)}}


def main():
    compiled = {name: compile_template(source) for name, (source, _, _) in TEMPLATES.items()}
    cases = []
    for name, (_, tokens, renders_tools) in TEMPLATES.items():
        for conversation_name, conversation in CONVERSATIONS.items():
            if conversation.get("needs_tools") and not renders_tools:
                continue
            for generation in (False, True):
                case = {"template": name, "conversation": conversation_name, "add_generation_prompt": generation}
                case.update(render(compiled[name], tokens, conversation, generation, {}))
                cases.append(case)
    for name, conversation_name, extra in EXTRA_CASES:
        for generation in (False, True):
            case = {
                "template": name,
                "conversation": conversation_name,
                "add_generation_prompt": generation,
                "extra": extra,
            }
            case.update(render(compiled[name], TEMPLATES[name][1], CONVERSATIONS[conversation_name], generation, extra))
            cases.append(case)

    snippets = []
    for source in SNIPPETS:
        result = render(compile_template(source), {}, {"messages": SNIPPET_CONTEXT["messages"]}, False, SNIPPET_CONTEXT)
        if "error" in result:
            raise SystemExit(f"snippet unexpectedly failed: {source!r}: {result['error']}")
        snippets.append({"source": source, "expected": result["expected"]})
    for source in ERROR_SNIPPETS:
        try:
            template = compile_template(source)
        except jinja2.exceptions.TemplateError as e:
            snippets.append({"source": source, "error": {"kind": type(e).__name__, "message": str(e)}})
            continue
        result = render(template, {}, {"messages": SNIPPET_CONTEXT["messages"]}, False, SNIPPET_CONTEXT)
        if "error" not in result:
            raise SystemExit(f"error snippet rendered: {source!r}")
        snippets.append({"source": source, **result})

    fixture = {
        "generator": "Tests/fixture-scripts/chat_templates.py",
        "jinja2_version": jinja2.__version__,
        "fixed_now_utc": FIXED_NOW.isoformat() + "Z",
        "templates": {
            name: {"source": source, "special_tokens": tokens} for name, (source, tokens, _) in TEMPLATES.items()
        },
        "conversations": {
            name: {key: value for key, value in c.items() if key != "needs_tools"} for name, c in CONVERSATIONS.items()
        },
        "cases": cases,
        "snippet_context": SNIPPET_CONTEXT,
        "snippets": snippets,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum(1 for c in cases if "error" in c)
    print(f"wrote {len(snippets)} snippets and {len(cases)} cases ({errors} expected errors) for {len(TEMPLATES)} templates to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
