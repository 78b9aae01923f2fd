/** A TCP proxy in front of the server that can lose an answer the server already sent. */

import net from "node:net";

export type Fault = "cut" | "hold";

export interface Proxy {
  url: string;
  /**
   * The next request whose first line starts with `method` gets `fault`: "cut" destroys the
   * client's connection when the server's answer arrives (the server has committed by then);
   * "hold" never passes the answer on, so the client times out.
   */
  arm(method: string, fault: Fault): void;
  /** Requests the proxy saw, by first line. */
  requests: string[];
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const { hostname, port } = new URL(target);
  const armed: Array<{ method: string; fault: Fault }> = [];
  const requests: string[] = [];
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    let fault: Fault | undefined;
    client.on("data", (chunk: Buffer) => {
      const line = /^([A-Z]+) (\S+) HTTP\/1\.1\r\n/.exec(chunk.toString("latin1"));
      if (line) {
        requests.push(`${line[1]} ${line[2]}`);
        const next = armed.findIndex((a) => a.method === line[1]);
        if (next >= 0) fault = armed.splice(next, 1)[0]?.fault;
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (fault === "cut") {
        client.destroy();
        upstream.destroy();
      } else if (fault !== "hold") {
        client.write(chunk);
      }
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    arm: (method, fault) => armed.push({ method, fault }),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
