// The spectrum-ts side of the end-to-end test (spectrum_test.go runs it).
// An unmodified spectrum-ts 12.8.0 app, configured as any self-hosted app
// is (imessage.config({ clients: [{ address, token, phone }] }) and the
// relay's CA in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), does every operation the
// SDK has against line-relay + line-agent + the simulated Messages and
// checks what comes back, including the simulated people's replies
// through app.messages.
//
// Talking to the Go test: a line "@@ctrl {json}" on stdout asks it to do
// something outside the app (stop the relay, ...) and the answer comes back
// as one JSON line on stdin; "@@step {json}" reports a step's outcome and
// "@@done {json}" the ids the Go test checks against chat.db and the
// relay's events. Anything else on stdout or stderr is the SDK's log.

import assert from "node:assert/strict";
import { createInterface } from "node:readline";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (the Go test sets it)`);
  return v;
};
const ADDRESS = env("SPECTRUM_ADDRESS");
const TOKEN = env("SPECTRUM_TOKEN");
const LINE = env("SPECTRUM_LINE");
const PEER = env("SPECTRUM_PEER");
const PEER2 = env("SPECTRUM_PEER2");
const NO_MAC_TOKEN = env("SPECTRUM_NO_MAC_TOKEN");
const BACKGROUND_MS = Number(env("SPECTRUM_BACKGROUND_MS"));
const PHOTO_HEX = env("SPECTRUM_PHOTO_HEX"); // what the simulated people send when asked for a photo
env("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"); // read by grpc-js when it loads

// Imported only now: grpc-js reads the CA path once, at load.
const { Spectrum, attachment } = await import("spectrum-ts");
const { imessage, effect } = await import("spectrum-ts/providers/imessage");

// ---- the Go test on the other end of stdin/stdout --------------------------

const stdin = createInterface({ input: process.stdin });
const answers = [];
const answerWaiters = [];
stdin.on("line", (line) => {
  const w = answerWaiters.shift();
  if (w) w(JSON.parse(line));
  else answers.push(JSON.parse(line));
});
async function ctrl(op, args = {}) {
  process.stdout.write(`@@ctrl ${JSON.stringify({ op, ...args })}\n`);
  const a = answers.length ? answers.shift() : await new Promise((r) => answerWaiters.push(r));
  if (!a.ok) throw new Error(`the Go test could not ${op}: ${a.error}`);
  return a;
}
const report = (kind, obj) => process.stdout.write(`@@${kind} ${JSON.stringify(obj)}\n`);

// within rejects when p takes longer than ms: no await here may hang.
function within(ms, what, p) {
  let t;
  const timeout = new Promise((_, rej) => {
    t = setTimeout(() => rej(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const out = await within(90_000, name, fn());
    report("step", { name, ok: true, ms: Date.now() - t0 });
    return out;
  } catch (err) {
    report("step", { name, ok: false, ms: Date.now() - t0, error: String(err?.stack ?? err) });
    throw err;
  }
}

// ---- app.messages: everything that arrives, in order ------------------------

const app = await Spectrum({
  providers: [imessage.config({ clients: [{ address: ADDRESS, token: TOKEN, phone: LINE }] })],
  options: { logLevel: "warn" },
});
const im = imessage(app);

const inbox = []; // [space, message] in arrival order
const seenIDs = new Map(); // message id → times delivered
let inboxWaiters = [];
const pump = (async () => {
  for await (const [space, message] of app.messages) {
    seenIDs.set(message.id, (seenIDs.get(message.id) ?? 0) + 1);
    inbox.push({ space, message });
    const ws = inboxWaiters;
    inboxWaiters = [];
    for (const w of ws) w();
  }
})();

const textOf = (m) => (m.content?.type === "text" ? m.content.text : undefined);

// arrival waits for the first message after index `from` that match
// accepts, and returns it with its index.
async function arrival(what, match, from = 0, ms = 30_000) {
  return within(ms, `waiting for ${what}`, (async () => {
    for (let i = from; ; ) {
      for (; i < inbox.length; i++) {
        if (match(inbox[i])) return { ...inbox[i], index: i };
      }
      await new Promise((r) => inboxWaiters.push(r));
    }
  })());
}
const replyTo = (space, text) => ({ space: s, message: m }) =>
  s.id === space.id && m.direction === "inbound" && textOf(m) === text;

// caught runs fn and returns the error it must throw.
async function caught(fn) {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail("the call succeeded; it should have failed");
}

// A 1×1 PNG, the smallest image Messages takes as a background.
const PNG = Buffer.from(
  "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201a5d2e3c30000000049454e44ae426082",
  "hex",
);

const done = {};

// ---- the operations ----------------------------------------------------------

const dm = await step("create DM", async () => {
  const s = await im.space.create(PEER);
  assert.equal(s.id, `any;-;${PEER}`);
  assert.equal(s.type, "dm");
  return s;
});
done.dm = dm.id;

const hello = await step("send text, receive the reply", async () => {
  const m = await dm.send("hello from spectrum");
  assert.ok(m?.id, "the send resolved without a message id");
  const r = await arrival("the reply to hello", replyTo(dm, "got it: hello from spectrum"));
  assert.equal(r.message.sender.id, PEER);
  done.inbound = r.message.id;
  return { sent: m, reply: r.message };
});
done.hello = hello.sent.id;

await step("send with an effect", async () => {
  const m = await dm.send(effect("confetti for you", imessage.effect.message.confetti));
  assert.ok(m?.id);
  done.effect = m.id;
  await arrival("the reply to the effect", replyTo(dm, "got it: confetti for you"));
});

await step("reply to an inbound message", async () => {
  const m = await hello.reply.reply("a threaded answer");
  assert.ok(m?.id);
  done.reply = m.id;
});

await step("react, react with an emoji, remove a reaction", async () => {
  const heart = await hello.reply.react("❤️");
  assert.ok(heart?.id, "react resolved without the reaction's id");
  done.heart = heart.id;
  const party = await hello.reply.react("🎉");
  assert.ok(party?.id);
  done.emoji = party.id;
  await heart.unsend();
});

await step("typing on and off", async () => {
  await dm.startTyping();
  await dm.stopTyping();
  assert.equal(await dm.responding(async () => 42), 42);
});

await step("edit", async () => {
  await hello.sent.edit("hello from spectrum (edited)");
});

await step("unsend", async () => {
  const m = await dm.send("this one goes away");
  assert.ok(m?.id);
  done.unsent = m.id;
  await m.unsend();
});

await step("mark read", async () => {
  await hello.reply.read();
});

await step("set a background: resolves only once distributable", async () => {
  const t0 = Date.now();
  await dm.background(PNG, { mimeType: "image/png" });
  const took = Date.now() - t0;
  assert.ok(took >= BACKGROUND_MS * 0.9, `background resolved after ${took} ms, before the ${BACKGROUND_MS} ms upload could finish`);
  done.backgroundMs = took;
});

await step("clear the background", async () => {
  await dm.background("clear");
});

const group = await step("create a group, send, receive a reply", async () => {
  const g = await im.space.create([PEER, PEER2]);
  assert.equal(g.type, "group");
  assert.match(g.id, /^any;\+;./);
  const m = await g.send("hello group");
  assert.ok(m?.id);
  const r = await arrival("a reply in the group", ({ space: s, message: x }) => s.id === g.id && x.direction === "inbound" && textOf(x) === "got it: hello group");
  assert.ok([PEER, PEER2].includes(r.message.sender.id), `the group reply came from ${r.message.sender.id}`);
  return g;
});
done.group = group.id;

await step("rename the group", async () => {
  await group.rename("line-agent e2e");
});

// ---- a relay restart while the app keeps running ----------------------------

await step("catch-up across a relay restart", async () => {
  const from = inbox.length;
  const texts = ["gap-1", "gap-2", "gap-3"];
  for (const t of texts) assert.ok((await dm.send(t))?.id);
  // The Go test stops the relay now, waits until the simulated person's
  // three replies are in chat.db (written while no relay runs), then
  // starts it again. The app is never told.
  await ctrl("restart-relay-around-replies", { texts: texts.map((t) => `got it: ${t}`) });
  let at = from;
  for (const t of texts) {
    const r = await arrival(`"got it: ${t}" after the restart`, replyTo(dm, `got it: ${t}`), at, 60_000);
    at = r.index + 1;
  }
  // And live delivery goes on after the catch-up.
  assert.ok((await dm.send("after the restart"))?.id);
  await arrival("the reply after the restart", replyTo(dm, "got it: after the restart"), at);
});

// ---- errors an application can act on ---------------------------------------

await step("wrong token: AuthenticationError", async () => {
  const bad = await Spectrum({
    providers: [imessage.config({ clients: [{ address: ADDRESS, token: "lrk_not-a-token", phone: LINE }] })],
    options: { logLevel: "error" },
  });
  try {
    const err = await caught(() => imessage(bad).space.create(PEER));
    assert.equal(err.name, "AuthenticationError", String(err));
    assert.equal(err.grpcCode, 16);
  } finally {
    await bad.stop();
  }
});

await step("unknown group: NotFoundError chatNotFound", async () => {
  const ghost = await im.space.get("any;+;chat000000000000000000");
  const err = await caught(() => ghost.send("anyone?"));
  assert.equal(err.name, "NotFoundError", String(err));
  assert.equal(err.code, "chatNotFound");
  assert.equal(err.retryable, false);
});

await step("not an image: ValidationError", async () => {
  const err = await caught(() => dm.background(Buffer.from("not an image at all"), { mimeType: "image/png" }));
  assert.equal(err.name, "ValidationError", String(err));
  assert.equal(err.code, "invalidArgument");
});

await step("no Mac for the line: ConnectionError, retryable", async () => {
  const away = await Spectrum({
    providers: [imessage.config({ clients: [{ address: ADDRESS, token: NO_MAC_TOKEN, phone: "+15550000999" }] })],
    options: { logLevel: "error" },
  });
  try {
    const s = await imessage(away).space.get(`any;-;${PEER}`);
    const err = await caught(() => s.send("is anybody there"));
    assert.equal(err.name, "ConnectionError", String(err));
    assert.equal(err.retryable, true);
    assert.equal(err.code, "serviceUnavailable");
  } finally {
    await away.stop();
  }
});

await step("the line's daily new-conversation quota spent: RateLimitError", async () => {
  // The agent runs with --quota-new-conversations 2: PEER and PEER2 took
  // both, so a first message to a third person is refused before it
  // reaches Messages.
  const stranger = await im.space.get("any;-;+15557654399");
  const err = await caught(() => stranger.send("hello, stranger"));
  assert.equal(err.name, "RateLimitError", String(err));
  assert.equal(err.code, "dailyLimitExceeded");
  assert.ok(Number(err.context.retry_after_seconds) > 0, `retry_after_seconds: ${err.context.retry_after_seconds}`);
});

await step("a call line-relay does not serve: IMessageError", async () => {
  const err = await caught(() => group.add("+15550001234"));
  assert.equal(err.name, "IMessageError", String(err));
  assert.equal(err.grpcCode, 12); // UNIMPLEMENTED
});

// ---- attachments, both ways -------------------------------------------------

await step("attachment out", async () => {
  const m = await dm.send(attachment(Buffer.from("line-agent e2e attachment\n"), { name: "note.txt", mimeType: "text/plain" }));
  assert.ok(m?.id);
  done.attachment = m.id;
});

for (const [what, ask] of [["a photo", "photo please"], ["a photo still downloading: the download waits for the whole file", "slow photo please"]]) {
  await step(`attachment in: ${what}`, async () => {
    const from = inbox.length;
    assert.ok((await dm.send(ask))?.id);
    const r = await arrival(`the photo for "${ask}"`, ({ space: s, message: m }) =>
      s.id === dm.id && m.direction === "inbound" && m.content?.type === "attachment", from);
    assert.equal(r.message.content.mimeType, "image/png");
    const bytes = await r.message.content.read();
    assert.equal(bytes.toString("hex"), PHOTO_HEX, "the downloaded bytes are not the photo the person sent");
  });
}

// ---- nothing twice ---------------------------------------------------------------

await step("every message arrived once", async () => {
  const twice = [...seenIDs].filter(([, n]) => n > 1);
  assert.deepEqual(twice, [], `delivered more than once: ${JSON.stringify(twice)}`);
});

await app.stop();
await pump.catch(() => {});
report("done", done);
stdin.close();
process.exit(0);
