"""An offline, deterministic stand-in for a tool-calling chat model.

It lets the weather example (and the tests that drive it) run without an API key or network:
a human turn gets a call to the bound weather tool, a tool turn gets an answer built from the
tool's output. Everything (text, ids, token counts) is a pure function of the conversation, so
the same input always gives byte-identical output.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

# Fixed namespace so message ids are stable across processes and machines.
_ID_NAMESPACE = uuid.UUID("3f4e2a8c-6b1d-5e7f-9a0b-1c2d3e4f5a6b")
# "what's the weather in sf?" -> "sf"; also "for"/"at" phrasings.
_PLACE_RE = re.compile(r"\b(?:in|for|at)\s+(.+?)[\s?.!]*$", re.IGNORECASE)


def _words(text: str) -> int:
    return len(text.split())


class ScriptedWeatherModel(BaseChatModel):
    """Chat model that scripts the two turns of a one-tool ReAct loop."""

    model_name: str = "scripted-weather"
    tool_names: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-weather"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "tool_names": self.tool_names}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # A copy rather than a RunnableBinding: the model itself must know the names to call.
        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        transcript = "\n".join(f"{m.type}: {m.text}" for m in messages)
        digest = hashlib.sha256(transcript.encode()).hexdigest()
        msg_id = f"scripted-{uuid.uuid5(_ID_NAMESPACE, transcript)}"
        input_tokens = sum(_words(m.text) for m in messages)
        tool = next((n for n in self.tool_names if "weather" in n), None)
        tool = tool or (self.tool_names[0] if self.tool_names else None)
        last = messages[-1] if messages else None

        if tool and not isinstance(last, ToolMessage):
            question = last.text if last else ""
            match = _PLACE_RE.search(question)
            query = f"weather in {match.group(1)}" if match else question.strip()
            args = {"query": query}
            call = {"name": tool, "args": args, "id": f"call_{digest[:24]}", "type": "tool_call"}
            output_tokens = _words(tool) + _words(json.dumps(args))
            content, stop_reason, tool_calls = "", "tool_use", [call]
        else:
            content = self._answer(messages)
            output_tokens = _words(content)
            stop_reason, tool_calls = "end_turn", []

        usage = UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )
        return AIMessage(
            content=content,
            id=msg_id,
            tool_calls=tool_calls,
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name, "stop_reason": stop_reason},
        )

    @staticmethod
    def _answer(messages: list[BaseMessage]) -> str:
        # The tool results are the trailing ToolMessages; their call carries the query.
        results: list[str] = []
        for m in reversed(messages):
            if not isinstance(m, ToolMessage):
                break
            results.insert(0, m.text)
        if not results:
            human = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
            return f"I can only look up the weather. You said: {human.text if human else ''}"
        calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
        query = calls[-1]["args"].get("query", "the weather") if calls else "the weather"
        return f"Here's the current {query}: {' '.join(results)}"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel reports each yielded chunk to callbacks itself, so no on_llm_new_token.
        reply = self._reply(messages)
        text = reply.text
        tokens = re.findall(r"\s*\S+", text) or [text]
        for i, token in enumerate(tokens):
            final = i == len(tokens) - 1
            # Usage and metadata ride on the last chunk only: chunk addition sums usage and
            # concatenates string metadata, so repeating them would corrupt the merged message.
            chunk = AIMessageChunk(
                content=token,
                id=reply.id,
                tool_call_chunks=[
                    {
                        "name": c["name"],
                        "args": json.dumps(c["args"]),
                        "id": c["id"],
                        "index": n,
                        "type": "tool_call_chunk",
                    }
                    for n, c in enumerate(reply.tool_calls)
                ]
                if final
                else [],
                usage_metadata=reply.usage_metadata if final else None,
                response_metadata=reply.response_metadata if final else {},
                chunk_position="last" if final else None,
            )
            yield ChatGenerationChunk(message=chunk)
