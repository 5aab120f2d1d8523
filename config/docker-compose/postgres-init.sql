-- Runs once when the docker-compose Postgres starts with an empty volume: a sample
-- schema, then a user and a publication set up exactly as the ClickPipes guide says.
CREATE TABLE public.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    total numeric(12,2) NOT NULL,
    status text NOT NULL DEFAULT 'new',
    placed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO public.customers (name, email)
SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 1000) AS i;
INSERT INTO public.orders (customer_id, total)
SELECT 1 + (i % 1000), round((random() * 500)::numeric, 2) FROM generate_series(1, 10000) AS i;

CREATE USER clickpipes_user PASSWORD 'clickpipes-password';
GRANT USAGE ON SCHEMA "public" TO clickpipes_user;
GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO clickpipes_user;
ALTER DEFAULT PRIVILEGES IN SCHEMA "public" GRANT SELECT ON TABLES TO clickpipes_user;
ALTER USER clickpipes_user WITH REPLICATION;
CREATE PUBLICATION clickpipes FOR TABLE public.customers, public.orders;
