type Listener<T> = (value: T) => void;
/** Events by name → payload type. */
export declare class Emitter<Events extends object> {
    private readonly listeners;
    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void;
    /** Adds a listener called once. */
    once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void;
    /** Removes a listener. */
    off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void;
    /** Calls every listener in order. A listener that throws does not stop the
     * others nor the client: its error is rethrown on a later tick, where the
     * runtime reports it. */
    protected emit<K extends keyof Events>(event: K, value: Events[K]): void;
}
export {};
