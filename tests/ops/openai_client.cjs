// Drives gistmem's OpenAI-compatible endpoint with the official `openai` npm client and prints
// one JSON object with what came back; openai_client_test.py checks it.
//
//   node openai_client.cjs models | chat SESSION | stream SESSION | badkey
//   (SESSION "-": no x-gistmem-session header, a one-off session)
// Environment: OPENAI_BASE_URL (http://127.0.0.1:PORT/v1), OPENAI_API_KEY, GISTMEM_MODEL,
// NODE_PATH (where fetch_openai_client.sh installed the client).
const OpenAI = require("openai");

function client(apiKey) {
  return new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey, maxRetries: 0, timeout: 120000 });
}

function sessionOptions(session) {
  return session && session !== "-" ? { headers: { "x-gistmem-session": session } } : {};
}

const messages = (text) => [
  { role: "system", content: "You are a terse assistant." },
  { role: "user", content: text },
];

async function main() {
  const [step, session] = process.argv.slice(2);
  const openai = client(process.env.OPENAI_API_KEY);
  const model = process.env.GISTMEM_MODEL;
  if (step === "models") {
    const page = await openai.models.list();
    return { ids: page.data.map((m) => m.id) };
  }
  if (step === "chat") {
    const completion = await openai.chat.completions.create(
      { model, messages: messages("Say hello."), max_tokens: 8, temperature: 0 },
      sessionOptions(session));
    return {
      object: completion.object,
      content: completion.choices[0].message.content,
      role: completion.choices[0].message.role,
      finish_reason: completion.choices[0].finish_reason,
      usage: completion.usage,
      session_id: completion.session_id,
    };
  }
  if (step === "stream") {
    const stream = await openai.chat.completions.create(
      { model, messages: messages("Tell me more."), max_tokens: 8, temperature: 0, stream: true,
        stream_options: { include_usage: true } },
      sessionOptions(session));
    let content = "";
    let chunks = 0;
    let finish_reason = null;
    let usage = null;
    let role = null;
    for await (const chunk of stream) {
      chunks += 1;
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.delta.role) role = choice.delta.role;
        if (choice.delta.content) content += choice.delta.content;
        if (choice.finish_reason) finish_reason = choice.finish_reason;
      }
    }
    return { content, chunks, finish_reason, usage, role };
  }
  if (step === "badkey") {
    try {
      await client("not-a-key-of-this-server").chat.completions.create(
        { model, messages: messages("Hi") });
      return { error: null };
    } catch (error) {
      return { name: error.constructor.name, status: error.status, type: error.type,
               code: error.code, message: error.message };
    }
  }
  throw new Error(`unknown step ${step}`);
}

main().then((result) => console.log(JSON.stringify(result)),
            (error) => { console.error(error); process.exit(1); });
