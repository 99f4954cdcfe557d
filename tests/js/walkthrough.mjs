// The "How to kick off background runs" walkthrough, driven by the official JS client.
//
// Usage: node walkthrough.mjs [SERVER_URL]   (or AGENTD_URL=...; default http://127.0.0.1:2024)
// The server must serve examples/weather as graph "agent". Prints one JSON object with every
// response to stdout (partial if a check fails) and exits 1 on the first failed check.
import { isDeepStrictEqual } from "node:util";
import { Client } from "@langchain/langgraph-sdk";

const apiUrl = process.argv[2] ?? process.env.AGENTD_URL ?? "http://127.0.0.1:2024";
const timeoutMs = Number(process.env.AGENTD_WALKTHROUGH_TIMEOUT_MS ?? 60_000);

const ASSISTANT = "agent";
const INPUT = { messages: [{ role: "user", content: "what's the weather in sf" }] };
// uuid5 of "agent" in the server's namespace: the system assistant id the docs show.
const SYSTEM_ASSISTANT_ID = "fe096781-5601-53d2-b2f6-0d3403f7e9ca";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
const THREAD_KEYS = ["thread_id", "created_at", "updated_at", "metadata", "status", "config", "values"];
const RUN_KEYS = [
  "run_id", "thread_id", "assistant_id", "created_at", "updated_at",
  "metadata", "status", "kwargs", "multitask_strategy",
];
const STATE_KEYS = [
  "values", "next", "tasks", "metadata", "created_at", "checkpoint_id", "parent_checkpoint_id",
];
const MESSAGE_KEYS = ["content", "additional_kwargs", "response_metadata", "type", "name", "id"];
const AI_KEYS = [...MESSAGE_KEYS, "tool_calls", "invalid_tool_calls", "usage_metadata"];
const TOOL_KEYS = [...MESSAGE_KEYS, "tool_call_id", "status"];

class CheckFailed extends Error {}

function check(ok, what, got) {
  if (!ok) {
    const shown = got === undefined ? "" : `; got ${JSON.stringify(got)}`;
    throw new CheckFailed(`${what}${shown}`);
  }
}

function hasKeys(obj, keys, what) {
  check(obj !== null && typeof obj === "object" && !Array.isArray(obj), `${what} is an object`, obj);
  const missing = keys.filter((k) => !(k in obj));
  check(missing.length === 0, `${what} has keys ${missing.join(", ")}`, Object.keys(obj));
}

function checkRun(run, what, threadId) {
  hasKeys(run, RUN_KEYS, what);
  check(UUID.test(run.run_id), `${what}.run_id is a UUID`, run.run_id);
  check(run.thread_id === threadId, `${what}.thread_id is the thread's`, run.thread_id);
  check(run.assistant_id === SYSTEM_ASSISTANT_ID, `${what}.assistant_id`, run.assistant_id);
  check(TIMESTAMP.test(run.created_at), `${what}.created_at is ISO-8601`, run.created_at);
  check(TIMESTAMP.test(run.updated_at), `${what}.updated_at is ISO-8601`, run.updated_at);
  // The docs page shows metadata {} and "reject"; today's server adds the assistant's and
  // thread's metadata and defaults to "enqueue", and wire compatibility means matching it.
  check(run.metadata?.graph_id === ASSISTANT && run.metadata?.assistant_id === SYSTEM_ASSISTANT_ID,
    `${what}.metadata has graph_id and assistant_id`, run.metadata);
  check(run.multitask_strategy === "enqueue", `${what}.multitask_strategy is enqueue`,
    run.multitask_strategy);
  hasKeys(run.kwargs, ["input", "config", "stream_mode"], `${what}.kwargs`);
  check(isDeepStrictEqual(run.kwargs.input, INPUT), `${what}.kwargs.input echoes the input`,
    run.kwargs.input);
  const configurable = run.kwargs.config?.configurable ?? {};
  check(configurable.run_id === run.run_id && configurable.thread_id === threadId
    && configurable.graph_id === ASSISTANT && configurable.assistant_id === SYSTEM_ASSISTANT_ID,
  `${what}.kwargs.config.configurable has run_id/thread_id/graph_id/assistant_id`, configurable);
}

function checkMessages(messages, what) {
  check(Array.isArray(messages), `${what} is an array`, messages);
  const types = messages.map((m) => m?.type);
  check(isDeepStrictEqual(types, ["human", "ai", "tool", "ai"]), `${what} types`, types);
  const [human, call, tool, answer] = messages;
  hasKeys(human, MESSAGE_KEYS, `${what}[0]`);
  check(human.content === INPUT.messages[0].content, `${what}[0].content`, human.content);
  hasKeys(call, AI_KEYS, `${what}[1]`);
  check(call.tool_calls.length === 1, `${what}[1] has one tool call`, call.tool_calls);
  hasKeys(call.tool_calls[0], ["name", "args", "id", "type"], `${what}[1].tool_calls[0]`);
  hasKeys(tool, TOOL_KEYS, `${what}[2]`);
  check(tool.tool_call_id === call.tool_calls[0].id, `${what}[2].tool_call_id matches the call`,
    tool.tool_call_id);
  hasKeys(answer, AI_KEYS, `${what}[3]`);
  check(answer.tool_calls.length === 0, `${what}[3] has no tool calls`, answer.tool_calls);
  check(answer.content?.length > 0, `${what}[3] has content`, answer.content);
}

const got = {};
const requests = [];

async function main() {
  const client = new Client({
    apiUrl,
    apiKey: null, // never pick up a LangSmith key from the environment
    timeoutMs,
    callerOptions: { maxRetries: 0 }, // a retry would hide the first failure
    onRequest: (url, init) => {
      requests.push({ method: init.method ?? "GET", url: String(url), body: init.body ?? null });
      return init;
    },
  });

  const thread = (got.thread = await client.threads.create());
  hasKeys(thread, THREAD_KEYS, "thread");
  check(UUID.test(thread.thread_id), "thread.thread_id is a UUID", thread.thread_id);
  check(TIMESTAMP.test(thread.created_at), "thread.created_at is ISO-8601", thread.created_at);
  check(thread.status === "idle", "thread.status is idle", thread.status);
  check(isDeepStrictEqual(thread.metadata, {}), "thread.metadata is {}", thread.metadata);
  check(isDeepStrictEqual(thread.config, {}), "thread.config is {}", thread.config);
  check(thread.values === null, "thread.values is null", thread.values);
  const threadId = thread.thread_id;

  got.runs_before = await client.runs.list(threadId);
  check(isDeepStrictEqual(got.runs_before, []), "runs.list before any run is []", got.runs_before);

  const created = (got.created = await client.runs.create(threadId, ASSISTANT, { input: INPUT }));
  checkRun(created, "created", threadId);
  check(created.status === "pending", "created.status is pending", created.status);

  const polled = (got.polled = await client.runs.get(threadId, created.run_id));
  checkRun(polled, "polled", threadId);
  check(polled.run_id === created.run_id, "polled.run_id is the created run's", polled.run_id);
  check(["pending", "running"].includes(polled.status), "polled.status is pending or running",
    polled.status);

  got.joined = await client.runs.join(threadId, created.run_id,
    { signal: AbortSignal.timeout(timeoutMs) });
  checkMessages(got.joined?.messages, "joined.messages");

  const after = (got.after_join = await client.runs.get(threadId, created.run_id));
  checkRun(after, "after_join", threadId);
  check(after.status === "success", "after_join.status is success", after.status);

  const state = (got.state = await client.threads.getState(threadId));
  hasKeys(state, STATE_KEYS, "state");
  checkMessages(state.values?.messages, "state.values.messages");
  check(isDeepStrictEqual(state.values, got.joined), "state.values equals the join result");
  check(isDeepStrictEqual(state.next, []), "state.next is []", state.next);
  check(isDeepStrictEqual(state.tasks, []), "state.tasks is []", state.tasks);
  hasKeys(state.metadata, ["source", "step", "run_id", "thread_id", "graph_id", "assistant_id"],
    "state.metadata");
  check(state.metadata.run_id === created.run_id, "state.metadata.run_id", state.metadata.run_id);
  check(state.metadata.source === "loop" && state.metadata.step === 3,
    "state.metadata is the loop's step 3", [state.metadata.source, state.metadata.step]);
  check(TIMESTAMP.test(state.created_at), "state.created_at is ISO-8601", state.created_at);
  check(typeof state.checkpoint_id === "string" && typeof state.parent_checkpoint_id === "string",
    "state has checkpoint_id and parent_checkpoint_id", [state.checkpoint_id,
      state.parent_checkpoint_id]);
}

let code = 0;
try {
  await main();
} catch (err) {
  code = 1;
  const reason = err instanceof CheckFailed ? "check failed" : "request failed";
  console.error(`walkthrough ${reason} against ${apiUrl}: ${err.message ?? err}`);
}
console.log(JSON.stringify({ ...got, requests }, null, 2));
process.exitCode = code;
