// The Anvil wire encoding of values (protocol §5): JSON inline, and the special values
// (dates, big ints, non-finite floats, Blobs, portable objects and value types the client
// does not know) as `null` placeholders described by descriptors in `objects`.
// encodeCall turns a call's JS arguments into {json, objects, media}; decodeMessage turns
// a reply's placeholders back into JS values. Transports move the bytes; this module only
// knows values. Other modules teach it their own value types with registerValueType
// (tasks.js: background tasks).

import {AnvilError} from "./errors.js";

const INT32_MAX = 2147483647; // larger ints travel as "Long" descriptors

// Hidden markers. Symbols are skipped by JSON.stringify and Object.keys, so marked
// values still look like plain dates and objects to the page's own code.
const DATE_MARK = Symbol("anvil.Date"); // a Date that means a calendar date
export const TYPE_NAME = Symbol("anvil.typeName"); // portable class instance (ValueType)
const RAW_DESCRIPTOR = Symbol("anvil.descriptor"); // a value type we do not understand

// Value types with a class of their own on this side, by type name: {cls, encode, decode}.
const valueTypes = new Map();

/** Teach the codec a ValueType: instances of `cls` are sent as `typeName` with
 * `encode(value)` as their JSON; a received `typeName` becomes `decode(json, origin)`
 * (`origin`: the AnvilServer it came from), or a plain portable object when that gives
 * undefined. */
export function registerValueType(typeName, {cls, encode, decode}) {
  valueTypes.set(typeName, {cls, encode, decode});
}

class Kwargs {
  constructor(values) {
    this.values = values ?? {};
  }
}

/** Keyword arguments for server.call: pass `kwargs({...})` as the last argument. */
export function kwargs(values) {
  return new Kwargs(values);
}

/** A calendar date (Python `datetime.date`): `anvilDate(2024, 2, 29)` with a 1-based
 * month, or `anvilDate("2024-02-29")`, or `anvilDate(someDate)` (its local date).
 * It is a JS Date at local midnight that the server receives as a date. */
export function anvilDate(year, month, day) {
  let d;
  if (year instanceof Date) {
    d = new Date(year.getFullYear(), year.getMonth(), year.getDate());
  } else if (typeof year === "string") {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(year);
    if (!m) throw new TypeError(`anvilDate: expected "YYYY-MM-DD", got ${JSON.stringify(year)}`);
    return anvilDate(Number(m[1]), Number(m[2]), Number(m[3]));
  } else {
    d = new Date(2000, 0, 1);
    d.setFullYear(year, month - 1, day); // setFullYear: years 0-99 are not 1900-1999
  }
  d[DATE_MARK] = true;
  return d;
}

/** True if `value` is a calendar date (from anvilDate or received from the server). */
export function isAnvilDate(value) {
  return value instanceof Date && value[DATE_MARK] === true;
}

/** Mark a plain object as an instance of a server portable class, e.g.
 * `portable("app.Point", {x: 1, y: 2})`; objects received as such stay marked. */
export function portable(typeName, data) {
  Object.defineProperty(data, TYPE_NAME, {value: typeName, enumerable: false, configurable: true});
  return data;
}

/** The portable class name of an object received from the server, or undefined. */
export function portableTypeName(value) {
  return value != null && typeof value === "object" ? value[TYPE_NAME] : undefined;
}

// ---------------------------------------------------------------------------------------
// Encoding: JS values -> {json, objects, media}

const pad = (n, width = 2) => String(Math.abs(n)).padStart(width, "0");

function formatDate(d) {
  return `${pad(d.getFullYear(), 4)}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function formatDateTime(d) {
  // Local wall time plus the browser's offset for that instant (DST-aware).
  const offset = -d.getTimezoneOffset();
  const sign = offset < 0 ? "-" : "+";
  return `${formatDate(d)} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    `.${pad(d.getMilliseconds() * 1000, 6)}${sign}${pad(Math.floor(Math.abs(offset) / 60))}${pad(Math.abs(offset) % 60)}`;
}

function serializationError(what, path) {
  const where = path.map((k) => `[${JSON.stringify(k)}]`).join("");
  return new AnvilError("anvil.server.SerializationError",
    `Cannot serialize arguments to function. Cannot serialize ${what} at msg${where}`);
}

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

let idCounter = 0;
const ID_PREFIX = Math.random().toString(36).slice(2, 8);
/** A fresh id for a call ("c") or a Media object ("m"), unique in this page. */
export function newId(kind) {
  idCounter += 1;
  return `${kind}-${ID_PREFIX}-${idCounter}`;
}

/** Encode a value found at `path`. Returns its JSON form; pushes descriptors onto
 * `objects` and Blobs onto `media` ({id, blob, descriptor}). */
function encodeValue(value, path, objects, media, seen) {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) {
        objects.push({type: ["Float"], path, value: Number.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity"});
        return null;
      }
      if (Number.isInteger(value) && Math.abs(value) > INT32_MAX) {
        objects.push({type: ["Long"], path, value: BigInt(value).toString()});
        return null;
      }
      return value;
    case "bigint":
      if (value > BigInt(INT32_MAX) || value < -BigInt(INT32_MAX)) {
        objects.push({type: ["Long"], path, value: value.toString()});
        return null;
      }
      return Number(value);
    case "object":
      break;
    default:
      throw serializationError(`${typeof value} value`, path);
  }

  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw serializationError("invalid Date", path);
    objects.push(value[DATE_MARK]
      ? {type: ["Date"], path, value: formatDate(value)}
      : {type: ["DateTime"], path, value: formatDateTime(value)});
    return null;
  }
  if (value instanceof Blob) {
    const descriptor = {
      type: ["DataMedia"], path, id: newId("m"),
      "mime-type": value.type || null,
      name: value instanceof File ? value.name : null,
    };
    objects.push(descriptor);
    media.push({id: descriptor.id, blob: value, descriptor});
    return null;
  }
  for (const [typeName, known] of valueTypes) {
    if (value instanceof known.cls) {
      objects.push({type: ["ValueType"], path, typeName});
      return known.encode(value);
    }
  }
  if (value[RAW_DESCRIPTOR]) {
    // Something the server sent that we do not interpret (a LiveObject, a
    // Capability...): send its descriptor back unchanged.
    objects.push({...value[RAW_DESCRIPTOR], path});
    return null;
  }
  if (value instanceof Kwargs) throw serializationError("kwargs() other than as the last argument", path);
  if (seen.has(value)) throw serializationError("circular reference", path);

  seen.add(value);
  let json;
  if (Array.isArray(value)) {
    json = value.map((item, i) => encodeValue(item, [...path, i], objects, media, seen));
  } else if (isPlainObject(value)) {
    json = {};
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue; // as JSON.stringify does
      json[key] = encodeValue(item, [...path, key], objects, media, seen);
    }
    // A portable object's descriptor comes after those of the values inside it.
    if (value[TYPE_NAME]) objects.push({type: ["ValueType"], path, typeName: value[TYPE_NAME]});
  } else {
    throw serializationError(`${value.constructor?.name ?? "object"} object`, path);
  }
  seen.delete(value);
  return json;
}

/** Encode a call's arguments. The last argument may be kwargs({...}). */
export function encodeCall(args) {
  let kw = {};
  if (args.length && args[args.length - 1] instanceof Kwargs) {
    kw = args[args.length - 1].values;
    args = args.slice(0, -1);
  }
  if (!isPlainObject(kw)) throw serializationError("kwargs that are not a plain object", ["kwargs"]);
  const objects = [];
  const media = [];
  const seen = new Set();
  const json = {
    args: args.map((a, i) => encodeValue(a, ["args", i], objects, media, seen)),
    kwargs: encodeValue(kw, ["kwargs"], objects, media, seen),
  };
  return {json, objects, media};
}

// ---------------------------------------------------------------------------------------
// Decoding: {response, objects} -> JS values

function parseDateTime(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$/.exec(text);
  if (!m) throw new Error(`bad DateTime ${JSON.stringify(text)}`);
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const ms = Number(((frac ?? "") + "000").slice(0, 3));
  if (!tz) { // naive: read as local wall time
    const local = new Date(2000, 0, 1);
    local.setFullYear(Number(y), Number(mo) - 1, Number(d));
    local.setHours(Number(h), Number(mi), Number(s), ms);
    return local;
  }
  let offsetMinutes = 0;
  if (tz !== "Z") {
    const digits = tz.replace(":", "");
    offsetMinutes = (digits[0] === "-" ? -1 : 1) * (Number(digits.slice(1, 3)) * 60 + Number(digits.slice(3, 5)));
  }
  const utc = new Date(0);
  utc.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  utc.setUTCHours(Number(h), Number(mi) - offsetMinutes, Number(s), ms);
  return utc;
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(bytes) {
  let binary = "";
  // String.fromCharCode takes arguments; slices keep us under the engine's limit.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function makeBlob(descriptor, parts) {
  const type = descriptor["mime-type"] || "";
  return descriptor.name != null
    ? new File(parts, descriptor.name, {type})
    : new Blob(parts, {type});
}

/** The JS value a descriptor stands for. `current` is what the JSON holds at its path;
 * `mediaParts(descriptor)` gives a DataMedia's bytes as a list of parts; `origin` is the
 * AnvilServer the value came from (a Task asks it about itself). */
function decodeDescriptor(descriptor, current, mediaParts, origin) {
  const types = Array.isArray(descriptor.type) ? descriptor.type : [descriptor.type];
  for (const type of types) {
    switch (type) {
      case "DateTime":
        return descriptor.value ? parseDateTime(descriptor.value) : null;
      case "Date":
        return descriptor.value ? anvilDate(descriptor.value) : null;
      case "Long": {
        const big = BigInt(descriptor.value);
        return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
      case "Float":
        return Number(descriptor.value); // "Infinity", "-Infinity", "NaN"
      case "Primitive":
        return descriptor.value;
      case "DataMedia":
        return makeBlob(descriptor, mediaParts(descriptor));
      case "ValueType": {
        if (current === null || typeof current !== "object") break;
        const decoded = valueTypes.get(descriptor.typeName)?.decode(current, origin);
        if (decoded !== undefined) return decoded;
        return portable(descriptor.typeName, current);
      }
    }
  }
  const {path: _path, ...rest} = descriptor;
  const raw = {...rest};
  Object.defineProperty(raw, RAW_DESCRIPTOR, {value: rest, enumerable: false});
  return raw;
}

/** Replace the placeholders of `message` (a reply) in place, in `objects` order. */
export function decodeMessage(message, mediaParts, origin) {
  for (const descriptor of message.objects ?? []) {
    const path = descriptor.path;
    if (!Array.isArray(path) || path.length === 0) throw new Error("descriptor without a path");
    let parent = message;
    for (const key of path.slice(0, -1)) {
      parent = parent?.[key];
      if (parent === null || typeof parent !== "object") throw new Error(`no such path ${JSON.stringify(path)}`);
    }
    const last = path[path.length - 1];
    parent[last] = decodeDescriptor(descriptor, parent[last], mediaParts, origin);
  }
  return message;
}

/** Whether a descriptor stands for Media (whose bytes travel apart from the JSON). */
export function isDataMedia(descriptor) {
  return Array.isArray(descriptor.type) ? descriptor.type[0] === "DataMedia" : descriptor.type === "DataMedia";
}

