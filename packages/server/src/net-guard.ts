/**
 * Outbound address checks (no server-side request forgery): which addresses count as
 * non-public, and a dns.lookup that refuses them at connection time, so a name cannot be
 * re-pointed at a private address between a check and the connection (DNS rebinding). Used by
 * push (docs/server.md §Push) and federation (protocol §17.1).
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';

const BLOCKED = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  BLOCKED.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  BLOCKED.addSubnet(net, prefix, 'ipv6');
}

/** Whether an address is private, loopback, link-local, reserved or multicast (IPv4-mapped included). */
export function isNonPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  if (family === 6) {
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible forms are checked as the IPv4 address.
    const m = /^(?:::ffff:|::)(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (m !== null) return BLOCKED.check(m[1]!, 'ipv4');
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
    if (hex !== null) {
      const n = (parseInt(hex[1]!, 16) << 16) | parseInt(hex[2]!, 16);
      return BLOCKED.check([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'), 'ipv4');
    }
    return BLOCKED.check(address, 'ipv6');
  }
  return BLOCKED.check(address, 'ipv4');
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether a host (a name or a literal address, brackets allowed) is loopback: 127.0.0.0/8, ::1 or `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h.toLowerCase() === 'localhost') return true;
  const family = isIP(h);
  if (family === 4) return LOOPBACK.check(h, 'ipv4');
  if (family === 6) {
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(h);
    return m !== null ? LOOPBACK.check(m[1]!, 'ipv4') : LOOPBACK.check(h, 'ipv6');
  }
  return false;
}

/** Every address a name resolves to (dns.lookup, so /etc/hosts counts as it does for connections). */
export function resolveAll(host: string): Promise<string[]> {
  return new Promise((resolve, reject) =>
    dnsLookup(host, { all: true, verbatim: true }, (err, addrs) => (err ? reject(err) : resolve(addrs.map((a) => a.address)))),
  );
}

/** A URL's host without the brackets of an IPv6 literal. */
export function hostOf(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
}

/** Error code of a connection refused by `publicLookup` (kept from push, where it started). */
export const PRIVATE_ADDRESS_CODE = 'EPUSHPRIVATE';

/**
 * A dns.lookup for outbound requests that refuses a name with any non-public answer (error
 * code PRIVATE_ADDRESS_CODE), so the address checked is the address connected to.
 */
export function publicLookup(
  hostname: string,
  options: LookupOptions,
  cb: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addrs) => {
    if (err) return cb(err, '');
    if (addrs.length === 0 || addrs.some((a) => isNonPublicAddress(a.address))) {
      return cb(Object.assign(new Error(`${hostname} resolves to a non-public address`), { code: PRIVATE_ADDRESS_CODE }), '');
    }
    if (options.all === true) cb(null, addrs);
    else cb(null, addrs[0]!.address, addrs[0]!.family);
  });
}
