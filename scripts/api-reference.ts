// Writes the API reference (docs/api.md) from the proto comments, read from the descriptors with source info
// that server reflection serves (server/src/gen/keymesh/v1/descriptor_set.ts): the reference and
// `grpcurl describe` always say the same. Usage: api-reference.ts <out.md>
import { writeFileSync } from "node:fs";
import {
  createFileRegistry,
  fromBinary,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescMethod,
  type DescService,
} from "@bufbuild/protobuf";
import * as wkt from "@bufbuild/protobuf/wkt";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { getComments } from "@bufbuild/protoplugin";
import { keymeshDescriptorSet } from "../server/src/gen/keymesh/v1/descriptor_set.js";

type Commented = Parameters<typeof getComments>[0];

const output = process.argv[2];
if (!output) throw new Error("usage: api-reference.ts <out.md>");

const set = fromBinary(wkt.FileDescriptorSetSchema, base64Decode(keymeshDescriptorSet));
const protos = new Map(set.file.map((f) => [f.name, f]));
// The set holds KeyMesh's files only; the well-known types they import resolve to protobuf-es's own.
const wellKnown = new Map(
  Object.entries(wkt)
    .filter(([name]) => name.startsWith("file_google_protobuf_"))
    .map(([, file]) => [(file as DescFile).proto.name, file as DescFile]),
);
const registry = createFileRegistry(...set.file.map((f) => createFileRegistry(f, (name) => protos.get(name) ?? wellKnown.get(name))));
/** The hot path first, then administration, then what both share; a file added later goes at the end. */
const ORDER = ["keymesh/v1/pool.proto", "keymesh/v1/admin.proto", "keymesh/v1/common.proto"];
const rank = (name: string): number => (ORDER.includes(name) ? ORDER.indexOf(name) : ORDER.length);
const files = set.file
  .map((f) => registry.getFile(f.name)!)
  .sort((a, b) => rank(a.proto.name) - rank(b.proto.name) || a.proto.name.localeCompare(b.proto.name));
const own = new Set(files.map((f) => f.name));

/** A heading's anchor as GitHub derives it (lower case, punctuation dropped, spaces to hyphens). */
function slug(heading: string): string {
  return heading.toLowerCase().replace(/[^a-z0-9 _-]/g, "").replaceAll(" ", "-");
}

const headings = new Set<string>();
/** A heading line; two headings with one anchor would make links ambiguous, so that fails the generation. */
function heading(level: number, text: string): string {
  const a = slug(text);
  if (headings.has(a)) throw new Error(`two headings would share the anchor #${a}`);
  headings.add(a);
  return `${"#".repeat(level)} ${text}`;
}

/** The comment's paragraphs: protoc keeps the space after "//" and a newline per line. */
function paragraphs(desc: Commented): string[][] {
  const { leading, trailing } = getComments(desc);
  const out: string[][] = [[]];
  for (const raw of [leading, trailing].filter((t) => t !== undefined).join("\n").split("\n")) {
    const line = raw.replace(/^ /, "").trimEnd();
    if (line !== "") out[out.length - 1]!.push(line);
    else if (out[out.length - 1]!.length > 0) out.push([]);
  }
  return out.filter((p) => p.length > 0);
}

const block = (desc: Commented): string => paragraphs(desc).map((p) => p.join("\n")).join("\n\n");
const cell = (desc: Commented): string => paragraphs(desc).map((p) => p.join(" ").replaceAll("|", "\\|")).join("<br><br>");

/** Where the declaration starts in its .proto file, from the source info's span. */
function line(desc: DescMessage | DescEnum): number {
  const path = getComments(desc).sourcePath;
  const at = desc.file.proto.sourceCodeInfo?.location.find((l) => l.path.length === path.length && l.path.every((v, i) => v === path[i]));
  return at?.span[0] ?? 0;
}

const typeRef = (desc: DescMessage | DescEnum): string =>
  own.has(desc.file.name) ? `[${desc.name}](#${slug(desc.name)})` : `\`${desc.typeName}\``;
const scalar = (t: ScalarType): string => ScalarType[t].toLowerCase();

function fieldType(f: DescField): string {
  switch (f.fieldKind) {
    case "scalar":
      return `\`${f.proto.proto3Optional ? "optional " : ""}${scalar(f.scalar)}\``;
    case "enum":
      return typeRef(f.enum);
    case "message":
      return typeRef(f.message);
    case "list":
      return f.listKind === "scalar" ? `\`repeated ${scalar(f.scalar)}\`` : `repeated ${typeRef(f.listKind === "enum" ? f.enum : f.message)}`;
    case "map":
      return f.mapKind === "scalar"
        ? `\`map<${scalar(f.mapKey)}, ${scalar(f.scalar)}>\``
        : `map&lt;\`${scalar(f.mapKey)}\`, ${typeRef(f.mapKind === "enum" ? f.enum : f.message)}&gt;`;
  }
}

function streams(m: DescMethod): { client: string; server: string } {
  const client = m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming";
  const server = m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";
  return { client: client ? "stream " : "", server: server ? "stream " : "" };
}

function service(s: DescService): string[] {
  const out = [heading(2, s.name), "", block(s), "", "| method | request | response |", "|---|---|---|"];
  for (const m of s.methods) {
    const { client, server } = streams(m);
    out.push(`| [${m.name}](#${slug(m.name)}) | ${client}${typeRef(m.input)} | ${server}${typeRef(m.output)} |`);
  }
  out.push("");
  for (const m of s.methods) {
    const { client, server } = streams(m);
    out.push(heading(3, m.name), "", `\`rpc ${m.name}(${client}${m.input.name}) returns (${server}${m.output.name})\``, "", block(m), "");
  }
  return out;
}

function message(m: DescMessage): string[] {
  const out = [heading(3, m.name), "", block(m), ""];
  if (m.fields.length === 0) return [...out, "No fields.", ""];
  out.push("| field | no. | type | description |", "|---|---|---|---|");
  for (const f of m.fields) {
    const oneof = f.oneof && !f.proto.proto3Optional ? `(oneof \`${f.oneof.name}\`) ` : "";
    out.push(`| \`${f.name}\` | ${f.number} | ${fieldType(f)} | ${oneof}${cell(f)} |`);
  }
  return [...out, ""];
}

function enumeration(e: DescEnum): string[] {
  const out = [heading(3, e.name), "", block(e), "", "| value | no. | description |", "|---|---|---|"];
  for (const v of e.values) out.push(`| \`${v.name}\` | ${v.number} | ${cell(v)} |`);
  return [...out, ""];
}

/** Messages and enums in declaration order, nested ones after their parent; map entries are not types of their own. */
function types(file: DescFile): string[] {
  const out: string[] = [];
  const visit = (d: DescMessage | DescEnum): void => {
    if (d.kind === "enum") {
      out.push(...enumeration(d));
    } else if (!d.proto.options?.mapEntry) {
      out.push(...message(d));
      [...d.nestedMessages, ...d.nestedEnums].sort((a, b) => line(a) - line(b)).forEach(visit);
    }
  };
  [...file.messages, ...file.enums].sort((a, b) => line(a) - line(b)).forEach(visit);
  return out.length === 0 ? [] : [heading(2, typesTitle(file)), "", `Declared in [proto/${file.proto.name}](../proto/${file.proto.name}).`, "", ...out];
}

const typesTitle = (file: DescFile): string => `Types in ${file.proto.name.slice(file.proto.name.lastIndexOf("/") + 1)}`;

const services = files.flatMap((f) => f.services);
const typed = files.filter((f) => f.messages.length + f.enums.length > 0);
const page = [
  heading(1, "API reference"),
  "",
  "<!-- Generated by `npm run generate` (scripts/api-reference.ts) from the comments in proto/keymesh/v1; do not edit. -->",
  "",
  "Generated from the comments in [`proto/keymesh/v1`](../proto/keymesh/v1), the contract; server reflection serves",
  "the same comments (`grpcurl -plaintext 127.0.0.1:50051 describe keymesh.v1.AcquireRequest`). To change this",
  "page, change the proto comments and run `npm run generate`.",
  "",
  `Package \`${files[0]!.proto.package}\`. A method's path is \`/<package>.<service>/<method>\`, e.g.`,
  "`/keymesh.v1.KeyPoolService/Acquire`. In JSON (Connect), fields are written in lowerCamelCase (`lease_ttl` is",
  "`leaseTtl`; the proto name is accepted too), a `google.protobuf.Duration` is a string of seconds such as",
  '`"1.5s"`, a `google.protobuf.Timestamp` an RFC 3339 string, a 64-bit integer a string, an enum value its name.',
  "",
  ...services.map((s) => `- [${s.name}](#${slug(s.name)}): ${paragraphs(s)[0]?.join(" ") ?? ""}`),
  ...typed.map((f) => `- [${typesTitle(f)}](#${slug(typesTitle(f))})`),
  "",
  ...services.flatMap(service),
  ...typed.flatMap(types),
];
writeFileSync(output, `${page.join("\n").replace(/\n{3,}/g, "\n\n").trimEnd()}\n`);
