// spectrum-echo: a spectrum-ts app that answers every message it receives
// with "echo: <text>". It runs unchanged against the platform or against a
// self-hosted line-relay; only the client's address and token differ.
//
//   SPECTRUM_ADDRESS  the relay's platform API, host:port (default localhost:7444)
//   SPECTRUM_TOKEN    a token from `line-relay api-token create` (required)
//   SPECTRUM_PHONE    the line the token serves (default +15550000001)
//   ECHO_GREET        optional: a handle to say hello to first, so that
//                     the simulated Messages has something to answer
//   GRPC_DEFAULT_SSL_ROOTS_FILE_PATH  the relay's ca.pem (set it before start)
import { Spectrum } from "spectrum-ts";
import { imessage } from "spectrum-ts/providers/imessage";

const token = process.env.SPECTRUM_TOKEN;
if (!token) {
  console.error("set SPECTRUM_TOKEN to a token from `line-relay api-token create`");
  process.exit(2);
}
const app = await Spectrum({
  providers: [
    imessage.config({
      clients: [{
        address: process.env.SPECTRUM_ADDRESS ?? "localhost:7444",
        token,
        phone: process.env.SPECTRUM_PHONE ?? "+15550000001",
      }],
    }),
  ],
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => app.stop().then(() => process.exit(0)));

if (process.env.ECHO_GREET) {
  const space = await imessage(app).space.create(process.env.ECHO_GREET);
  await space.send("hello from spectrum-echo");
}

for await (const [space, message] of app.messages) {
  if (message.content.type !== "text") continue; // reactions, read receipts...
  // Never answer an echo: two echo bots (or the simulated person, who
  // answers everything) would talk to each other for ever.
  if (message.content.text.includes("echo: ")) continue;
  console.log(`${message.sender.id} in ${space.id}: ${message.content.text}`);
  await space.send(`echo: ${message.content.text}`);
}
