/**
 * The reference for the enqueue benchmark: a bare Express 5 JSON echo server, run as its own
 * process (`node --import tsx bench/echo-server.ts`, PORT=0 by default) so it never shares an
 * event loop with the load generator. Prints `{"msg":"echo listening","port":N}` on stdout.
 */
import type { AddressInfo } from 'node:net';
import express from 'express';

const app = express();
app.post('/echo', express.json(), (req, res) => res.json(req.body));

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  console.log(JSON.stringify({ msg: 'echo listening', port }));
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
