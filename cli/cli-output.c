/* JSON and human-readable output for the admin tool. Logins come from
   attackers: every byte of them is escaped before it reaches JSON. */
#include <stdint.h>
#include <string.h>

#include "cli-output.h"

/* Length of the valid UTF-8 sequence at s, or 0 when it is not one. */
static size_t utf8_seq_len(const unsigned char *s)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

void json_write_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', f);
	while (*s != '\0') {
		size_t len;

		switch (*s) {
		case '"': fputs("\\\"", f); s++; continue;
		case '\\': fputs("\\\\", f); s++; continue;
		case '\n': fputs("\\n", f); s++; continue;
		case '\r': fputs("\\r", f); s++; continue;
		case '\t': fputs("\\t", f); s++; continue;
		default: break;
		}
		if (*s < 0x20 || *s == 0x7f) {
			fprintf(f, "\\u%04x", *s);
			s++;
			continue;
		}
		len = utf8_seq_len(s);
		if (len == 0) {
			fputs("\\ufffd", f);
			s++;
			continue;
		}
		fwrite(s, 1, len, f);
		s += len;
	}
	fputc('"', f);
}

static void field(struct json_out *out, const char *name)
{
	if (!out->first[out->depth])
		fputc(',', out->f);
	out->first[out->depth] = false;
	json_write_string(out->f, name);
	fputc(':', out->f);
}

void json_begin(struct json_out *out, FILE *f)
{
	memset(out, 0, sizeof(*out));
	out->f = f;
	out->first[0] = true;
	fputc('{', f);
}

void json_end(struct json_out *out)
{
	fputs("}\n", out->f);
}

void json_object_begin(struct json_out *out, const char *name)
{
	field(out, name);
	fputc('{', out->f);
	if (out->depth + 1 < sizeof(out->first) / sizeof(out->first[0]))
		out->depth++;
	out->first[out->depth] = true;
}

void json_object_end(struct json_out *out)
{
	fputc('}', out->f);
	if (out->depth > 0)
		out->depth--;
}

static void depth_push(struct json_out *out)
{
	if (out->depth + 1 < sizeof(out->first) / sizeof(out->first[0]))
		out->depth++;
	out->first[out->depth] = true;
}

void json_array_begin(struct json_out *out, const char *name)
{
	field(out, name);
	fputc('[', out->f);
	depth_push(out);
}

void json_array_end(struct json_out *out)
{
	fputc(']', out->f);
	if (out->depth > 0)
		out->depth--;
}

void json_element_begin(struct json_out *out)
{
	if (!out->first[out->depth])
		fputc(',', out->f);
	out->first[out->depth] = false;
	fputc('{', out->f);
	depth_push(out);
}

void json_str(struct json_out *out, const char *name, const char *value)
{
	field(out, name);
	json_write_string(out->f, value);
}

void json_uint(struct json_out *out, const char *name, unsigned long long value)
{
	field(out, name);
	fprintf(out->f, "%llu", value);
}

void json_bool(struct json_out *out, const char *name, bool value)
{
	field(out, name);
	fputs(value ? "true" : "false", out->f);
}

void json_null(struct json_out *out, const char *name)
{
	field(out, name);
	fputs("null", out->f);
}

const char *human_duration(unsigned long long secs, char *buf, size_t size)
{
	static const struct {
		const char *unit;
		unsigned long long secs;
	} units[] = {
		{ "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 },
	};
	unsigned long long major, minor = 0;
	size_t i;

	for (i = 0; i < 3 && secs < units[i].secs; i++)
		;
	major = secs / units[i].secs;
	if (i < 3)
		minor = secs % units[i].secs / units[i + 1].secs;
	if (minor == 0)
		snprintf(buf, size, "%llu%s", major, units[i].unit);
	else
		snprintf(buf, size, "%llu%s %llu%s", major, units[i].unit,
			 minor, units[i + 1].unit);
	return buf;
}
