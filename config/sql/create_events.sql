/*
** Sample schema for dbevent-bridge, in Ingres SQL for the terminal monitor:
**
**     sql demodb < config/sql/create_events.sql
**
** Two DBEvents, a table of orders, one database procedure that raises them,
** and two rules (Ingres' triggers) that run the procedure: one for every new
** order, one when an order's status becomes 'shipped'. The event text holds
** the order's key fields, e.g. 'order_id=17 customer=acme status=new' (Ingres
** keeps at most 256 bytes of it). The bridge registers the events by name:
**
**     BRIDGE_INGRES__EVENTS=order_created,order_shipped
**
** Mind what DBEvents are: RAISE DBEVENT delivers at once, not at commit, and
** a rollback does not take the event back; a consumer can see an event for a
** row that was never committed, and should read the row before acting on it.
** Events raised while the bridge is not connected and registered are lost
** (Ingres keeps no queue for absent sessions).
*/

CREATE DBEVENT order_created;\p\g
CREATE DBEVENT order_shipped;\p\g

CREATE TABLE orders (
    order_id INTEGER NOT NULL,
    customer VARCHAR(32) NOT NULL,
    status   VARCHAR(16) NOT NULL DEFAULT 'new',
    PRIMARY KEY (order_id)
);\p\g

/*
** RAISE DBEVENT takes the event's name literally (never from a variable), so
** the procedure picks one of the two statements.
*/
CREATE PROCEDURE order_event (
    order_id INTEGER NOT NULL,
    customer VARCHAR(32) NOT NULL,
    status   VARCHAR(16) NOT NULL
) AS
DECLARE
    msg VARCHAR(256) NOT NULL;
BEGIN
    msg = 'order_id=' + VARCHAR(:order_id) + ' customer=' + :customer
          + ' status=' + :status;
    IF :status = 'shipped' THEN
        RAISE DBEVENT order_shipped :msg;
    ELSE
        RAISE DBEVENT order_created :msg;
    ENDIF;
END;\p\g

CREATE RULE orders_created AFTER INSERT INTO orders
    EXECUTE PROCEDURE order_event (order_id = new.order_id, customer = new.customer,
                                   status = new.status);\p\g

CREATE RULE orders_shipped AFTER UPDATE(status) OF orders
    WHERE new.status = 'shipped' AND old.status <> 'shipped'
    EXECUTE PROCEDURE order_event (order_id = new.order_id, customer = new.customer,
                                   status = new.status);\p\g

/*
** The bridge's user needs REGISTER on events it does not own, e.g.:
**
**     GRANT REGISTER ON DBEVENT order_created TO bridge;\p\g
**     GRANT REGISTER ON DBEVENT order_shipped TO bridge;\p\g
**
** and qualifies them with the owner: BRIDGE_INGRES__EVENTS=owner.order_created,...
**
** Try it:
**
**     INSERT INTO orders (order_id, customer) VALUES (1, 'acme');\p\g
**     UPDATE orders SET status = 'shipped' WHERE order_id = 1;\p\g
**     COMMIT;\p\g
*/
