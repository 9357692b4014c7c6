// Command features reads streamfeat features of many entities straight from Redis, in one
// round trip (pipelined HMGET), with the rules of the Python client (docs/serving.md):
//
//	go run . -redis redis://localhost:6379/0 -topology orders \
//	    -fields orders__5m,orders__1h,amount_sum__1h -defaults '{"orders__5m":0}' u1 u2 42
//
// It prints {"entities": {id: {field: value}}, "meta": {id: {...}}} as JSON.
//
// The layout (docs/CONTRACT.md section 4): one hash per entity, key sf:{topology}:{entity};
// one field per feature and window, {feature}__{window}; each value is a JSON document
// (decimal text for numbers, JSON for strings and lists); the reserved fields _v (the
// write's version), _asof (event time, ms, the values are as of) and _updated (wall clock,
// ms, of the write).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The reserved fields of every entity hash.
const (
	fieldVersion = "_v"
	fieldAsOf    = "_asof"
	fieldUpdated = "_updated"
)

// Meta is what Redis says of one entity besides its values.
type Meta struct {
	Found     bool    `json:"found"`      // false: never written, or expired (ttl)
	AsOfMs    *int64  `json:"asof_ms"`    // event time the values are as of
	UpdatedMs *int64  `json:"updated_ms"` // wall-clock time of the write
	Version   *string `json:"version"`    // _v: "GGGGGGGGGG.PPPPPP.OOOOOOOOOOOOOOOOOOO"
	// _v split: a backfill writes with a higher generation; partition and offset are those
	// of the last Kafka record the values reflect. Text order of _v is version order.
	Generation *int64 `json:"generation,omitempty"`
	Partition  *int64 `json:"partition,omitempty"`
	Offset     *int64 `json:"offset,omitempty"`
}

// Read returns, for every entity, every field: its stored value (nil where the hash lacks
// the field: an aggregation over no events); for an entity Redis does not hold (no _v),
// the topology's default of the field, or nil where it has none.
func Read(ctx context.Context, rdb *redis.Client, topology string, entities, fields []string,
	defaults map[string]any) (map[string]map[string]any, map[string]Meta, error) {
	wanted := append(append([]string{}, fields...), fieldVersion, fieldAsOf, fieldUpdated)
	pipe := rdb.Pipeline()
	replies := make(map[string]*redis.SliceCmd, len(entities))
	for _, id := range entities {
		if _, seen := replies[id]; !seen {
			replies[id] = pipe.HMGet(ctx, "sf:"+topology+":"+id, wanted...)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("reading %d entities of %s: %w", len(replies), topology, err)
	}
	values := make(map[string]map[string]any, len(replies))
	metas := make(map[string]Meta, len(replies))
	n := len(fields)
	for id, cmd := range replies {
		row := cmd.Val()
		out := make(map[string]any, n)
		version, found := row[n].(string)
		if !found { // never written, or expired: the defaults
			for _, f := range fields {
				out[f] = defaults[f]
			}
			values[id], metas[id] = out, Meta{}
			continue
		}
		for i, f := range fields {
			text, ok := row[i].(string)
			if !ok {
				out[f] = nil
				continue
			}
			v, err := Decode(text)
			if err != nil {
				return nil, nil, fmt.Errorf("entity %s, field %s: %w", id, f, err)
			}
			out[f] = v
		}
		meta := Meta{Found: true, Version: &version,
			AsOfMs: integer(row[n+1]), UpdatedMs: integer(row[n+2])}
		if parts := strings.Split(version, "."); len(parts) == 3 {
			meta.Generation, meta.Partition, meta.Offset =
				integer(parts[0]), integer(parts[1]), integer(parts[2])
		}
		values[id], metas[id] = out, meta
	}
	return values, metas, nil
}

// Decode reads one stored value: every stored text is one JSON document. Numbers stay
// json.Number, exact (a count may exceed 2^53); call .Int64() or .Float64() as needed.
func Decode(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, fmt.Errorf("stored value %q is not streamfeat text (decimal or JSON)", text)
	}
	return v, nil
}

func integer(v any) *int64 {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

func main() {
	url := flag.String("redis", "redis://localhost:6379/0", "Redis URL (redis:// or rediss://)")
	topology := flag.String("topology", "", "the topology's name (its YAML's name:)")
	fieldList := flag.String("fields", "", "comma-separated fields, e.g. orders__5m,amount_sum__1h")
	defaultsJSON := flag.String("defaults", "{}", "defaults by field, as JSON "+
		`(streamfeat serve's GET /topologies lists them), e.g. {"orders__5m":0}`)
	flag.Parse()
	if *topology == "" || *fieldList == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: features -topology NAME -fields F1,F2 [-redis URL] "+
			"[-defaults JSON] ENTITY...")
		os.Exit(2)
	}
	opts, err := redis.ParseURL(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad -redis:", err)
		os.Exit(2)
	}
	var defaults map[string]any
	dec := json.NewDecoder(bytes.NewReader([]byte(*defaultsJSON)))
	dec.UseNumber()
	if err := dec.Decode(&defaults); err != nil {
		fmt.Fprintln(os.Stderr, "bad -defaults:", err)
		os.Exit(2)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	values, metas, err := Read(ctx, rdb, *topology, flag.Args(),
		strings.Split(*fieldList, ","), defaults)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.Marshal(map[string]any{"entities": values, "meta": metas})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
